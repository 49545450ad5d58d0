//! Property tests of the questions JSON path: arbitrary damage to a valid file
//! gives a located error (or, when the damage happens to stay valid, a result),
//! never a panic, and never a wrong count of questions without an error.

use clevr::json::JsonError;
use clevr::stream::for_each_question_in;
use proptest::prelude::*;
use std::path::Path;

fn valid_file() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/clevr-mini/questions/CLEVR_val_questions.json"),
    )
    .unwrap()
}

fn count_questions(text: &[u8]) -> Result<usize, JsonError> {
    let mut n = 0;
    for_each_question_in(Path::new("f.json"), text, |_| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

fn assert_located(err: &JsonError, text: &[u8]) {
    match err {
        JsonError::Parse { line, column, .. } => {
            let lines = text.split(|&b| b == b'\n').count();
            assert!(*line >= 1 && *line <= lines, "line {line} of {lines}");
            assert!(*column <= text.len() + 1);
            assert!(err.to_string().starts_with("f.json:"), "{err}");
        }
        other => panic!("expected a parse error, got {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn truncation_is_always_an_error(cut in 0.0f64..1.0) {
        let text = valid_file();
        let cut = ((text.len() - 1) as f64 * cut) as usize;
        let err = count_questions(&text.as_bytes()[..cut]).unwrap_err();
        assert_located(&err, &text.as_bytes()[..cut]);
    }

    #[test]
    fn damaged_bytes_never_panic(edits in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..6)) {
        let mut bytes = valid_file().into_bytes();
        let len = bytes.len();
        for (at, byte) in edits {
            bytes[((len - 1) as f64 * at) as usize] = byte;
        }
        match count_questions(&bytes) {
            Ok(n) => prop_assert!(n <= 26),
            Err(err) => assert_located(&err, &bytes),
        }
    }

    #[test]
    fn wrong_value_types_name_the_field(index in 0usize..26, field in prop_oneof![
        Just("image_index"), Just("question"), Just("answer"), Just("image_filename")
    ]) {
        let mut value: serde_json::Value = serde_json::from_str(&valid_file()).unwrap();
        value["questions"][index][field] = serde_json::json!([true]);
        let text = serde_json::to_string_pretty(&value).unwrap();
        let err = count_questions(text.as_bytes()).unwrap_err();
        assert_located(&err, text.as_bytes());
        let JsonError::Parse { field: path, .. } = &err else { unreachable!() };
        prop_assert_eq!(path, &format!("questions[{index}].{field}"));
    }
}
