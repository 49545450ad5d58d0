//! Fuzzing of every reader of an outside file: the questions and scenes JSON, the PNG
//! decoder and the features `.npy` header. Each meets arbitrary bytes and damaged valid
//! files (`support/mutate.rs`), 10 000 cases a reader. None may panic, and every failure
//! must be an error whose message names the file.

#[path = "support/mutate.rs"]
mod mutate;

use std::path::{Path, PathBuf};

use clevr::features::{write_npy, FeatureDType, FeatureFile};
use clevr::image::{decode_png, RgbImage};
use clevr::stream::for_each_question_in;
use clevr::ScenesFile;
use mutate::{arbitrary_bytes, edits, mutate};
use proptest::prelude::*;

const CASES: u32 = 10_000;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/clevr-mini")
            .join(path),
    )
    .unwrap()
}

/// A scratch file for readers that take a path, in a folder of its own for each case.
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = mutate::scratch_dir();
        let path = dir.path().join(name);
        Scratch { _dir: dir, path }
    }

    fn write(&self, bytes: &[u8]) -> &Path {
        std::fs::write(&self.path, bytes).unwrap();
        &self.path
    }
}

fn assert_names_file(message: String, file: &str) {
    assert!(
        message.contains(file),
        "the error does not name {file}: {message:?}"
    );
}

fn read_questions(bytes: &[u8]) {
    let mut seen = 0usize;
    match for_each_question_in(Path::new("q.json"), bytes, |_| {
        seen += 1;
        Ok(())
    }) {
        Ok(_) => {}
        Err(err) => assert_names_file(err.to_string(), "q.json"),
    }
}

fn read_scenes(scratch: &Scratch, bytes: &[u8]) {
    if let Err(err) = ScenesFile::read(scratch.write(bytes)) {
        assert_names_file(err.to_string(), "scenes.json");
    }
}

/// Decodes the PNG and, when it decodes, checks the image is as large as it claims.
fn read_png(scratch: &Scratch, bytes: &[u8]) {
    match decode_png(scratch.write(bytes)) {
        Ok(image) => assert_eq!(image.pixels.len(), image.width * image.height * 3),
        Err(err) => assert_names_file(err.to_string(), "image.png"),
    }
}

/// Opens the feature file and, when it opens, reads every row: the header's promises about
/// the data must hold.
fn read_npy(scratch: &Scratch, bytes: &[u8]) {
    match FeatureFile::open(scratch.write(bytes)) {
        Ok(file) => {
            assert!(file.map_len() <= clevr::features::MAX_MAP_VALUES);
            let rows = file.rows().min(64);
            let mut row = vec![0f32; if rows > 0 { file.map_len() } else { 0 }];
            for i in 0..rows {
                file.read_into(i, &mut row);
            }
        }
        Err(err) => assert_names_file(err.to_string(), "features.npy"),
    }
}

/// A valid PNG of a few pixels in one of the layouts CLEVR-like files use (8- and 16-bit
/// RGB, RGBA, grey, palette), so that damage reaches every decoding branch.
fn valid_png(layout: u8, width: u32, height: u32) -> Vec<u8> {
    use png::{BitDepth, ColorType};
    let (color, depth) = match layout % 6 {
        0 => (ColorType::Rgb, BitDepth::Eight),
        1 => (ColorType::Rgba, BitDepth::Eight),
        2 => (ColorType::Grayscale, BitDepth::Eight),
        3 => (ColorType::GrayscaleAlpha, BitDepth::Eight),
        4 => (ColorType::Rgb, BitDepth::Sixteen),
        _ => (ColorType::Indexed, BitDepth::Eight),
    };
    let samples = match color {
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::GrayscaleAlpha => 2,
        _ => 1,
    } * if depth == BitDepth::Sixteen { 2 } else { 1 };
    let data: Vec<u8> = (0..width * height * samples)
        .map(|i| (i * 37 % 251) as u8)
        .collect();
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_depth(depth);
    if color == ColorType::Indexed {
        encoder.set_palette((0..=255u8).flat_map(|i| [i, 255 - i, i / 2]).collect::<Vec<_>>());
    }
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

/// Recomputes every chunk's CRC, so that damage inside a chunk (the header's size fields
/// above all) reaches the decoder instead of failing the checksum. Stops at the first
/// chunk whose length runs past the end.
fn fix_png_crcs(bytes: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e + 4 <= bytes.len()) else {
            return;
        };
        let crc = crc32fast::hash(&bytes[at + 4..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

fn valid_npy(scratch: &Scratch, shape: &[usize], dtype: FeatureDType) -> Vec<u8> {
    let values: Vec<f32> = (0..shape.iter().product::<usize>()).map(|i| i as f32).collect();
    write_npy(&scratch.path, shape, dtype, &values).unwrap();
    std::fs::read(&scratch.path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn questions_reader_survives_arbitrary_bytes(bytes in arbitrary_bytes()) {
        read_questions(&bytes);
    }

    #[test]
    fn questions_reader_survives_damage(edits in edits()) {
        read_questions(&mutate(&fixture("questions/CLEVR_val_questions.json"), &edits));
    }

    #[test]
    fn scenes_reader_survives_arbitrary_bytes_and_damage(
        bytes in arbitrary_bytes(),
        edits in edits(),
    ) {
        let scratch = Scratch::new("scenes.json");
        read_scenes(&scratch, &bytes);
        read_scenes(&scratch, &mutate(&fixture("scenes/CLEVR_train_scenes.json"), &edits));
    }

    #[test]
    fn png_decoder_survives_arbitrary_bytes_and_damage(
        bytes in arbitrary_bytes(),
        layout in any::<u8>(),
        (width, height) in (1u32..9, 1u32..9),
        edits in edits(),
        fix_crcs in any::<bool>(),
    ) {
        let scratch = Scratch::new("image.png");
        read_png(&scratch, &bytes);
        let mut damaged = mutate(&valid_png(layout, width, height), &edits);
        if fix_crcs {
            fix_png_crcs(&mut damaged);
        }
        read_png(&scratch, &damaged);
    }

    #[test]
    fn npy_reader_survives_arbitrary_bytes_and_damage(
        bytes in arbitrary_bytes(),
        shape in proptest::collection::vec(0usize..4, 1..6),
        f16 in any::<bool>(),
        edits in edits(),
    ) {
        let scratch = Scratch::new("features.npy");
        read_npy(&scratch, &bytes);
        let dtype = if f16 { FeatureDType::F16 } else { FeatureDType::F32 };
        let valid = valid_npy(&scratch, &shape, dtype);
        read_npy(&scratch, &mutate(&valid, &edits));
    }
}

/// The damage reaches the readers' checks: without this, a mutation helper that broke
/// every file at its first byte would pass the fuzz tests above while testing nothing.
#[test]
fn damage_reaches_past_the_first_byte() {
    let scratch = Scratch::new("image.png");
    // A header claiming 60 000 x 60 000 pixels, with its CRC fixed, meets the size bound.
    let mut png = valid_png(0, 4, 4);
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    fix_png_crcs(&mut png);
    let err = decode_png(scratch.write(&png)).unwrap_err().to_string();
    assert!(err.contains("claims 60000 x 60000 pixels"), "{err}");
    let image: RgbImage = decode_png(scratch.write(&valid_png(5, 3, 2))).unwrap();
    assert_eq!((image.width, image.height), (3, 2));

    // A huge number in place of the npy shape's first size meets the size check.
    let npy_scratch = Scratch::new("features.npy");
    let valid = valid_npy(&npy_scratch, &[2, 3, 4, 5], FeatureDType::F32);
    let at = valid.windows(2).position(|w| w == b"(2").unwrap() as f64 / valid.len() as f64;
    let huge = mutate(&valid, &[(4, at, 0)]);
    let err = FeatureFile::open(npy_scratch.write(&huge))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("header field 'shape': (18446744073709551616, 3, 4, 5) is not a tuple of sizes"),
        "{err}"
    );

    // A field inserted into the file's top-level object is ignored, as serde ignores
    // unknown fields.
    let questions = fixture("questions/CLEVR_val_questions.json");
    let at = 0.0;
    let extra = mutate(&questions, &[(5, at, 9)]);
    assert_ne!(extra, questions);
    let mut n = 0;
    for_each_question_in(Path::new("q.json"), &extra[..], |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert!(n > 0);
}
