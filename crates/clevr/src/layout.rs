//! Where the files of a split live, by the real release file names.
//!
//! - CLEVR v1.0 (and the generated default): `questions/CLEVR_{split}_questions.json`,
//!   `scenes/CLEVR_{split}_scenes.json`, `images/{split}/CLEVR_{split}_{index:06}.png`
//!   for splits train, val, test.
//! - CLEVR-CoGenT v1.0: the same layout for splits trainA, valA, valB, testA, testB.
//! - CLEVR-Humans: `CLEVR-Humans-{train,val,test}.json` in their own folder, no
//!   scenes, and images taken from a CLEVR v1.0 folder.
//!
//! Images are always found from a question's `image_filename`: the split inside the
//! name (`CLEVR_val_000012.png` → `images/val/`) says which image folder holds it,
//! which is what lets Humans questions point into the v1.0 images.

use std::fmt;
use std::path::{Path, PathBuf};

/// Which release a data folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Release {
    /// CLEVR v1.0, and the generated default dataset, which copies its layout.
    V1,
    CoGenT,
    Humans,
}

impl Release {
    /// The split names the release ships.
    pub fn splits(self) -> &'static [&'static str] {
        match self {
            Release::V1 | Release::Humans => &["train", "val", "test"],
            Release::CoGenT => &["trainA", "valA", "valB", "testA", "testB"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Release::V1 => "CLEVR v1.0",
            Release::CoGenT => "CLEVR-CoGenT",
            Release::Humans => "CLEVR-Humans",
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A bad split name or image file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{release} has no split {split:?} (its splits: {expected})")]
    UnknownSplit {
        release: Release,
        split: String,
        expected: String,
    },
    #[error("image file name {0:?} is not of the form CLEVR_<split>_<index>.png")]
    BadImageName(String),
}

/// The files of one split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitFiles {
    pub release: Release,
    pub split: String,
    pub questions: PathBuf,
    /// `None` for CLEVR-Humans, which ships no scene graphs.
    pub scenes: Option<PathBuf>,
    /// The folder holding `{split}/CLEVR_{split}_{index}.png`.
    pub images_root: PathBuf,
}

impl SplitFiles {
    /// A CLEVR v1.0 or CoGenT split under `root` (the folder holding `questions/`,
    /// `scenes/` and `images/`).
    pub fn clevr(root: &Path, release: Release, split: &str) -> Result<Self, LayoutError> {
        check_split(release, split)?;
        Ok(SplitFiles {
            release,
            split: split.to_string(),
            questions: root
                .join("questions")
                .join(format!("CLEVR_{split}_questions.json")),
            scenes: Some(root.join("scenes").join(format!("CLEVR_{split}_scenes.json"))),
            images_root: root.join("images"),
        })
    }

    /// A CLEVR-Humans split: questions in `humans_dir`, images from the CLEVR v1.0
    /// folder `clevr_root`.
    pub fn humans(humans_dir: &Path, clevr_root: &Path, split: &str) -> Result<Self, LayoutError> {
        check_split(Release::Humans, split)?;
        Ok(SplitFiles {
            release: Release::Humans,
            split: split.to_string(),
            questions: humans_dir.join(format!("CLEVR-Humans-{split}.json")),
            scenes: None,
            images_root: clevr_root.join("images"),
        })
    }

    /// The path of an image named by a question's or scene's `image_filename`.
    pub fn image_path(&self, image_filename: &str) -> Result<PathBuf, LayoutError> {
        let split = image_split(image_filename)?;
        Ok(self.images_root.join(split).join(image_filename))
    }
}

fn check_split(release: Release, split: &str) -> Result<(), LayoutError> {
    if release.splits().contains(&split) {
        Ok(())
    } else {
        Err(LayoutError::UnknownSplit {
            release,
            split: split.to_string(),
            expected: release.splits().join(", "),
        })
    }
}

/// The split named inside `CLEVR_{split}_{index}.png`.
pub fn image_split(image_filename: &str) -> Result<&str, LayoutError> {
    image_name_parts(image_filename).map(|(split, _)| split)
}

/// The split and the index named by `CLEVR_{split}_{index}.png`.
pub fn image_name_parts(image_filename: &str) -> Result<(&str, usize), LayoutError> {
    let bad = || LayoutError::BadImageName(image_filename.to_string());
    let stem = image_filename
        .strip_prefix("CLEVR_")
        .and_then(|s| s.strip_suffix(".png"))
        .ok_or_else(bad)?;
    let (split, index) = stem.rsplit_once('_').ok_or_else(bad)?;
    let index = match index.bytes().all(|b| b.is_ascii_digit()) {
        true => index.parse::<usize>().map_err(|_| bad())?,
        false => return Err(bad()),
    };
    if split.is_empty() || split.contains(['/', '\\', '.']) {
        return Err(bad());
    }
    Ok((split, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_file_names_per_release() {
        let v1 = SplitFiles::clevr(Path::new("/d"), Release::V1, "train").unwrap();
        assert_eq!(v1.questions, Path::new("/d/questions/CLEVR_train_questions.json"));
        assert_eq!(
            v1.scenes.as_deref(),
            Some(Path::new("/d/scenes/CLEVR_train_scenes.json"))
        );
        assert_eq!(
            v1.image_path("CLEVR_train_000042.png").unwrap(),
            Path::new("/d/images/train/CLEVR_train_000042.png")
        );
        let cogent = SplitFiles::clevr(Path::new("/c"), Release::CoGenT, "valB").unwrap();
        assert_eq!(
            cogent.questions,
            Path::new("/c/questions/CLEVR_valB_questions.json")
        );
        assert_eq!(
            cogent.image_path("CLEVR_valB_000001.png").unwrap(),
            Path::new("/c/images/valB/CLEVR_valB_000001.png")
        );
        let humans = SplitFiles::humans(Path::new("/h"), Path::new("/d"), "val").unwrap();
        assert_eq!(humans.questions, Path::new("/h/CLEVR-Humans-val.json"));
        assert!(humans.scenes.is_none());
        assert_eq!(
            humans.image_path("CLEVR_val_000003.png").unwrap(),
            Path::new("/d/images/val/CLEVR_val_000003.png")
        );
    }

    #[test]
    fn wrong_split_names_list_the_right_ones() {
        let err = SplitFiles::clevr(Path::new("/d"), Release::CoGenT, "train").unwrap_err();
        assert!(
            err.to_string().contains("trainA, valA, valB, testA, testB"),
            "{err}"
        );
        assert!(SplitFiles::clevr(Path::new("/d"), Release::V1, "valA").is_err());
    }

    #[test]
    fn image_names_must_be_clevr_names() {
        assert_eq!(image_split("CLEVR_valA_000000.png").unwrap(), "valA");
        assert_eq!(image_name_parts("CLEVR_train_000042.png").unwrap(), ("train", 42));
        for bad in [
            "x.png",
            "CLEVR_val_.png",
            "CLEVR_../../etc_1.png",
            "CLEVR_val_12a.png",
            "CLEVR_val_1.jpg",
            "CLEVR_val_+1.png",
            "CLEVR_val_99999999999999999999999.png",
        ] {
            assert!(image_split(bad).is_err(), "{bad}");
        }
    }
}
