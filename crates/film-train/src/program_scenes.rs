//! The training scenes by `image_index`, for the switches that run each training
//! question's program on its scene (`--attention-weight`, `--intermediate-weight`,
//! `--referent-weight`).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use clevr::dataset::QuestionSet;
use clevr::executor::ExecError;
use clevr::{ProgramNode, Scene};

pub struct ProgramScenes<'a> {
    scenes: HashMap<usize, &'a Scene>,
}

impl<'a> ProgramScenes<'a> {
    pub fn new(scenes: &'a [Scene]) -> Self {
        ProgramScenes {
            scenes: scenes.iter().map(|s| (s.image_index, s)).collect(),
        }
    }

    /// `run` on the program of question `position` of `set` and its scene; errors name
    /// `switch`, the question and the scene.
    pub fn run<T>(
        &self,
        set: &QuestionSet,
        position: usize,
        switch: &str,
        run: impl FnOnce(&[ProgramNode], &Scene) -> Result<T, ExecError>,
    ) -> Result<T> {
        let programs = set.programs.as_ref().with_context(|| {
            format!("{switch} runs each training question's program, and these questions were loaded without programs")
        })?;
        let program = &programs[position];
        if program.is_empty() {
            bail!("{switch}: training question {position} has no program");
        }
        let image_index = set.image_index[position] as usize;
        let Some(scene) = self.scenes.get(&image_index) else {
            bail!("{switch}: question {position} is about image_index {image_index}, which the scene file does not have");
        };
        run(program, scene).with_context(|| {
            format!(
                "{switch}: running the program of training question {position} on scene {}",
                scene.image_filename
            )
        })
    }
}
