//! The dataset images the page offers: a split's images and, for each, its dataset
//! questions with their ground-truth answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A split to show: `images/<split>/*` and `questions/CLEVR_<split>_questions.json`.
pub const SPLIT: &str = "val";

/// One dataset image and its questions (question, ground-truth answer).
#[derive(Clone, Debug)]
pub struct GalleryImage {
    pub file: String,
    pub path: PathBuf,
    pub questions: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("locating split {SPLIT:?} under {}: {source}", data.display())]
    Layout {
        data: PathBuf,
        source: clevr::layout::LayoutError,
    },
    #[error("reading the questions of {}: {source}", path.display())]
    Questions {
        path: PathBuf,
        source: clevr::json::JsonError,
    },
}

/// The images of [`SPLIT`] under `data`, ordered by file name, with their answered
/// questions. A question without an answer (a test split) is left out.
pub fn read_gallery(data: &Path) -> Result<Vec<GalleryImage>, GalleryError> {
    let files =
        clevr::layout::SplitFiles::clevr(data, clevr::layout::Release::V1, SPLIT).map_err(|source| {
            GalleryError::Layout {
                data: data.to_path_buf(),
                source,
            }
        })?;
    let mut by_file: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    clevr::stream::for_each_question(&files.questions, |q| {
        if let Some(answer) = q.answer {
            by_file
                .entry(q.image_filename)
                .or_default()
                .push((q.question, answer));
        }
        Ok(())
    })
    .map_err(|source| GalleryError::Questions {
        path: files.questions.clone(),
        source,
    })?;
    Ok(by_file
        .into_iter()
        .filter_map(|(file, questions)| {
            let path = files.image_path(&file).ok()?;
            Some(GalleryImage {
                file,
                path,
                questions,
            })
        })
        .collect())
}
