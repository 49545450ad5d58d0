//! Perception supervised from the scene graph (`--perception-weight W`): a head on the
//! stem's output predicts, for each cell, whether an object's centre falls in it and that
//! object's colour, shape, material and size, from the training scenes' `objects` and
//! `pixel_coords`. Its loss, weighted by W, is added to the answer's during training; at
//! test time the head is unused, so the model still sees only the image and the question.
//!
//! This is the counterpart of the paper's ImageNet-pretrained features built from data
//! CLEVR already has: the stem learns to see objects and their attributes from every
//! image it is shown, instead of only through the answers.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use clevr::{Color, Material, Scene, Shape, Size};

/// Objectness, then the scores of each attribute's values in CLEVR's order.
pub(crate) const CLASSES: [usize; 4] = [
    Color::ALL.len(),
    Shape::ALL.len(),
    Material::ALL.len(),
    Size::ALL.len(),
];
/// Object centres up to a quarter of the image past its border count in the border cells.
const MARGIN_DIVISOR: i64 = 4;
/// Output channels of the head: objectness plus every attribute value.
pub const HEAD_OUTPUTS: usize = 1 + CLASSES[0] + CLASSES[1] + CLASSES[2] + CLASSES[3];

/// A 1x1 convolution from the stem's channels to [`HEAD_OUTPUTS`] scores per cell.
pub struct PerceptionHead {
    linear: Linear,
}

impl PerceptionHead {
    pub fn new(channels: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(PerceptionHead {
            linear: candle_nn::linear(channels, HEAD_OUTPUTS, vb)?,
        })
    }

    /// Scores (M·h·w, HEAD_OUTPUTS) for the stem's output (M, C, h, w), cells in
    /// row-major order within each image.
    pub fn forward(&self, stem: &Tensor) -> candle_core::Result<Tensor> {
        let (m, c, h, w) = stem.dims4()?;
        let cells = stem.permute((0, 2, 3, 1))?.reshape((m * h * w, c))?;
        self.linear.forward(&cells)
    }
}

/// One object as the head sees it: where its centre is (0..1 across and down the
/// image) and its attribute indices.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Seen {
    x: f64,
    y: f64,
    depth: f64,
    attributes: [u32; 4],
}

impl Seen {
    /// Its cell on an `h` x `w` grid, row-major, in the image as given or mirrored.
    fn cell(&self, mirrored: bool, (h, w): (usize, usize)) -> usize {
        let column = ((self.x * w as f64) as usize).min(w - 1);
        let column = if mirrored { w - 1 - column } else { column };
        let row = ((self.y * h as f64) as usize).min(h - 1);
        row * w + column
    }
}

/// The objects of every training scene, by `image_index`.
pub struct SceneTargets {
    scenes: HashMap<usize, Vec<Seen>>,
}

/// An image as the stem was given it: its `image_index`, and whether it was mirrored
/// left to right (`--mirror`), which mirrors its targets too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StemImage {
    pub image_index: usize,
    pub mirrored: bool,
}

/// The targets of one batch's distinct images on an h x w grid.
pub struct Targets {
    /// 1 where an object's centre falls in the cell, else 0: (M·h·w,) f32.
    objectness: Tensor,
    /// The cells holding an object, (K,) u32, and that object's attribute indices.
    object_cells: Tensor,
    attributes: [Tensor; 4],
}

impl SceneTargets {
    /// The objects of `scenes`, rendered at `(width, height)` pixels, which
    /// `pixel_coords` count in.
    pub fn from_scenes(scenes: &[Scene], (width, height): (u32, u32)) -> Result<Self> {
        let mut by_image = HashMap::with_capacity(scenes.len());
        for scene in scenes {
            let mut seen = Vec::with_capacity(scene.objects.len());
            for (i, o) in scene.objects.iter().enumerate() {
                let (x, y, depth) = o.pixel_coords;
                // A centre just past the border belongs to an object partly in view; one
                // far outside means the scenes were rendered at another size.
                let (mx, my) = (width as i64 / MARGIN_DIVISOR, height as i64 / MARGIN_DIVISOR);
                if x < -mx || y < -my || x >= width as i64 + mx || y >= height as i64 + my {
                    bail!(
                        "scene {} (image_index {}), object {i}: pixel_coords ({x}, {y}) lie outside the {width}x{height} image",
                        scene.image_filename,
                        scene.image_index
                    );
                }
                let x = x.clamp(0, width as i64 - 1);
                let y = y.clamp(0, height as i64 - 1);
                seen.push(Seen {
                    x: x as f64 / width as f64,
                    y: y as f64 / height as f64,
                    depth,
                    attributes: [
                        position(Color::ALL, o.color),
                        position(Shape::ALL, o.shape),
                        position(Material::ALL, o.material),
                        position(Size::ALL, o.size),
                    ],
                });
            }
            by_image.insert(scene.image_index, seen);
        }
        Ok(SceneTargets { scenes: by_image })
    }

    /// The cell of each of `objects` (indices into the scene's `objects`) of `image` on an
    /// `h` x `w` grid, row-major.
    pub fn object_cells(
        &self,
        image: StemImage,
        objects: &[usize],
        (h, w): (usize, usize),
    ) -> Result<Vec<usize>> {
        let seen = self.objects(image.image_index)?;
        objects
            .iter()
            .map(|&i| match seen.get(i) {
                Some(o) => Ok(o.cell(image.mirrored, (h, w))),
                None => bail!(
                    "scene targets: image_index {} has {} objects, no object {i}",
                    image.image_index,
                    seen.len()
                ),
            })
            .collect()
    }

    fn objects(&self, image_index: usize) -> Result<&[Seen]> {
        match self.scenes.get(&image_index) {
            Some(objects) => Ok(objects),
            None => bail!("scene targets: no scene for image_index {image_index}"),
        }
    }

    /// Targets for `images` (a batch's distinct images, in its order) on an `h` x `w`
    /// grid. Where two centres share a cell, the nearer object counts.
    pub fn batch(&self, images: &[StemImage], (h, w): (usize, usize), device: &Device) -> Result<Targets> {
        let mut objectness = vec![0f32; images.len() * h * w];
        let mut nearest: HashMap<usize, (f64, [u32; 4])> = HashMap::new();
        for (row, image) in images.iter().enumerate() {
            for o in self.objects(image.image_index)? {
                let cell = row * h * w + o.cell(image.mirrored, (h, w));
                objectness[cell] = 1.0;
                let entry = nearest.entry(cell).or_insert((f64::INFINITY, o.attributes));
                if o.depth < entry.0 {
                    *entry = (o.depth, o.attributes);
                }
            }
        }
        let mut cells: Vec<u32> = nearest.keys().map(|&c| c as u32).collect();
        cells.sort_unstable();
        let attribute = |k: usize| {
            let ids: Vec<u32> = cells.iter().map(|c| nearest[&(*c as usize)].1[k]).collect();
            Tensor::from_vec(ids, cells.len(), device)
        };
        Ok(Targets {
            objectness: Tensor::from_vec(objectness, images.len() * h * w, device)?,
            attributes: [attribute(0)?, attribute(1)?, attribute(2)?, attribute(3)?],
            object_cells: Tensor::from_vec(cells.clone(), cells.len(), device)?,
        })
    }
}

/// Where `value` is in `all` (every attribute value is listed in its `ALL`).
fn position<T: PartialEq>(all: &[T], value: T) -> u32 {
    all.iter().position(|a| *a == value).expect("a listed value") as u32
}

/// Width and height of the PNG at `path`, from its header: the size `pixel_coords` count in.
pub fn png_size(path: &std::path::Path) -> Result<(u32, u32)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .with_context(|| format!("{}: reading the PNG header", path.display()))?;
    let info = reader.info();
    Ok((info.width, info.height))
}

/// Objectness cross-entropy over all cells plus each attribute's cross-entropy over the
/// cells that hold an object.
pub fn loss(scores: &Tensor, targets: &Targets) -> candle_core::Result<Tensor> {
    let objectness = scores.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
    let mut total = stable_binary_cross_entropy(&objectness, &targets.objectness)?;
    if targets.object_cells.dim(0)? == 0 {
        return Ok(total);
    }
    let at_objects = scores.index_select(&targets.object_cells, 0)?;
    let mut offset = 1;
    for (classes, ids) in CLASSES.iter().zip(&targets.attributes) {
        let logits = at_objects.narrow(D::Minus1, offset, *classes)?;
        total = (total + candle_nn::loss::cross_entropy(&logits, ids)?)?;
        offset += classes;
    }
    Ok(total)
}

/// Mean binary cross-entropy of logits `x` against 0/1 targets `t`, as
/// max(x, 0) − x·t + log(1 + e^−|x|): the form that stays finite for large |x|, where
/// log(sigmoid(x)) underflows to −∞.
pub(crate) fn stable_binary_cross_entropy(x: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
    let softplus_of_minus_abs = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    (x.relu()? - (x * t)?)?.add(&softplus_of_minus_abs)?.mean_all()
}

/// Accuracy of the attribute predictions at the cells holding an object, all four
/// attributes counted: what the head has learnt to see.
pub fn attribute_accuracy(scores: &Tensor, targets: &Targets) -> candle_core::Result<f64> {
    let k = targets.object_cells.dim(0)?;
    if k == 0 {
        return Ok(0.0);
    }
    let at_objects = scores.index_select(&targets.object_cells, 0)?;
    let mut right = 0.0;
    let mut offset = 1;
    for (classes, ids) in CLASSES.iter().zip(&targets.attributes) {
        let predicted = at_objects
            .narrow(D::Minus1, offset, *classes)?
            .argmax(D::Minus1)?;
        right += predicted
            .eq(ids)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?;
        offset += classes;
    }
    Ok(right / (4 * k) as f64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clevr::scene::{Directions, Relationships};
    use clevr::Object;

    pub(crate) fn object(x: i64, y: i64, depth: f64, color: Color, shape: Shape) -> Object {
        Object {
            color,
            size: Size::Small,
            rotation: 0.0,
            shape,
            coords_3d: [0.0; 3],
            material: Material::Metal,
            pixel_coords: (x, y, depth),
        }
    }

    /// Scene `CLEVR_train_000003.png` (image_index 3) of `objects`, rendered at 480x320.
    pub(crate) fn scene(objects: Vec<Object>) -> Scene {
        Scene {
            image_index: 3,
            objects,
            relationships: Relationships::default(),
            image_filename: "CLEVR_train_000003.png".into(),
            split: "train".into(),
            directions: Directions::default(),
        }
    }

    #[test]
    fn targets_put_each_object_in_its_cell_and_the_nearer_one_wins() {
        let objects = vec![
            object(10, 10, 9.0, Color::Red, Shape::Cube),
            // Same 2x2 cell (the top left quarter): nearer, so it is the cell's object.
            object(100, 100, 5.0, Color::Blue, Shape::Sphere),
            object(470, 300, 7.0, Color::Yellow, Shape::Cylinder),
        ];
        let targets = SceneTargets::from_scenes(&[scene(objects)], (480, 320)).unwrap();
        let t = targets.batch(&[image(3, false)], (2, 2), &Device::Cpu).unwrap();
        assert_eq!(t.objectness.to_vec1::<f32>().unwrap(), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(t.object_cells.to_vec1::<u32>().unwrap(), [0, 3]);
        let blue = Color::ALL.iter().position(|c| *c == Color::Blue).unwrap() as u32;
        let yellow = Color::ALL.iter().position(|c| *c == Color::Yellow).unwrap() as u32;
        assert_eq!(t.attributes[0].to_vec1::<u32>().unwrap(), [blue, yellow]);

        // Scores that say exactly this give a small loss and full accuracy; others do not.
        let mut scores = vec![-10f32; 4 * HEAD_OUTPUTS];
        for (cell, attributes) in [(0usize, [blue, 1, 1, 1]), (3, [yellow, 2, 1, 1])] {
            scores[cell * HEAD_OUTPUTS] = 10.0;
            let mut offset = 1;
            for (classes, a) in CLASSES.iter().zip(attributes) {
                scores[cell * HEAD_OUTPUTS + offset + a as usize] = 10.0;
                offset += classes;
            }
        }
        let scores = Tensor::from_vec(scores, (4, HEAD_OUTPUTS), &Device::Cpu).unwrap();
        let good = loss(&scores, &t).unwrap().to_scalar::<f32>().unwrap();
        assert!(good < 1e-3, "{good}");
        assert_eq!(attribute_accuracy(&scores, &t).unwrap(), 1.0);
        let flat = Tensor::zeros((4, HEAD_OUTPUTS), DType::F32, &Device::Cpu).unwrap();
        assert!(loss(&flat, &t).unwrap().to_scalar::<f32>().unwrap() > 1.0);
        // Confidently wrong scores, far past what log(sigmoid) survives: a large, finite loss.
        let extreme = (scores * -20.0).unwrap();
        let value = loss(&extreme, &t).unwrap().to_scalar::<f32>().unwrap();
        assert!(value.is_finite() && value > 100.0, "{value}");

        // The same image mirrored: the blue sphere moves to the top right cell, the yellow
        // cylinder to the bottom left.
        let m = targets.batch(&[image(3, true)], (2, 2), &Device::Cpu).unwrap();
        assert_eq!(m.objectness.to_vec1::<f32>().unwrap(), [0.0, 1.0, 1.0, 0.0]);
        assert_eq!(m.object_cells.to_vec1::<u32>().unwrap(), [1, 2]);
        assert_eq!(m.attributes[0].to_vec1::<u32>().unwrap(), [blue, yellow]);
    }

    fn image(image_index: usize, mirrored: bool) -> StemImage {
        StemImage {
            image_index,
            mirrored,
        }
    }

    #[test]
    fn centres_just_outside_count_at_the_border_and_far_outside_are_an_error() {
        // Just past the bottom border: the object is partly in view, in the bottom row.
        let objects = vec![
            object(10, 10, 9.0, Color::Red, Shape::Cube),
            object(10, 322, 9.0, Color::Red, Shape::Cube),
        ];
        let targets = SceneTargets::from_scenes(&[scene(objects)], (480, 320)).unwrap();
        let t = targets.batch(&[image(3, false)], (2, 2), &Device::Cpu).unwrap();
        assert_eq!(t.objectness.to_vec1::<f32>().unwrap(), [1.0, 0.0, 1.0, 0.0]);
        let objects = vec![
            object(10, 10, 9.0, Color::Red, Shape::Cube),
            object(700, 10, 9.0, Color::Red, Shape::Cube),
        ];
        let err = SceneTargets::from_scenes(&[scene(objects)], (480, 320))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("CLEVR_train_000003.png (image_index 3), object 1: pixel_coords (700, 10)"),
            "{err}"
        );
    }

    #[test]
    fn the_head_scores_every_cell() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let head = PerceptionHead::new(6, vb).unwrap();
        let stem = Tensor::ones((2, 6, 3, 4), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(head.forward(&stem).unwrap().dims(), [24, HEAD_OUTPUTS]);
    }
}
