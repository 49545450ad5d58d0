//! Writes the tiny hand-made CLEVR-format sample used by the tests:
//! `cargo run -p clevr --example write_fixture -- fixtures/clevr-mini`
//!
//! Scenes are listed by hand, relationships follow CLEVR's rule (object j is
//! `rel` of object i when (c_j − c_i) · direction > 0.2), images are flat
//! 48 × 32 drawings of the objects, and every answer comes from the executor.
//! Once clevr-synth exists it replaces this with rendered data.

use clevr::attributes::{Color, Material, Shape, Size};
use clevr::image::{write_png, RgbImage};
use clevr::question::{ProgramNode, Question};
use clevr::scene::{Directions, Info, Object, Relationships, Scene, ScenesFile};
use clevr::{execute, ExecError};
use std::path::{Path, PathBuf};

const WIDTH: usize = 48;
const HEIGHT: usize = 32;
/// CLEVR's camera: the ground-plane directions of "right" and "behind".
const RIGHT: [f64; 3] = [0.656, 0.754, 0.0];
const BEHIND: [f64; 3] = [-0.754, 0.656, 0.0];
/// Minimum projected distance for a relation, as in the CLEVR generator.
const MARGIN: f64 = 0.2;

type Spec = (Color, Shape, Material, Size, [f64; 2]);

fn object((color, shape, material, size, [x, y]): Spec) -> Object {
    let z = match size {
        Size::Large => 0.7,
        Size::Small => 0.35,
    };
    // A rough projection onto the 480 × 320 image, enough for a recognisable drawing.
    let column = (240.0 + 45.0 * (x * RIGHT[0] + y * RIGHT[1])) as i64;
    let row = (200.0 - 25.0 * (x * BEHIND[0] + y * BEHIND[1])) as i64;
    Object {
        color,
        size,
        rotation: 0.0,
        shape,
        coords_3d: [x, y, z],
        material,
        pixel_coords: (column, row, 10.0),
    }
}

fn relationships(objects: &[Object]) -> Relationships {
    let related = |direction: [f64; 3]| -> Vec<Vec<usize>> {
        (0..objects.len())
            .map(|i| {
                (0..objects.len())
                    .filter(|&j| {
                        let d: f64 = (0..3)
                            .map(|k| (objects[j].coords_3d[k] - objects[i].coords_3d[k]) * direction[k])
                            .sum();
                        j != i && d > MARGIN
                    })
                    .collect()
            })
            .collect()
    };
    let neg = |v: [f64; 3]| [-v[0], -v[1], -v[2]];
    Relationships {
        right: related(RIGHT),
        behind: related(BEHIND),
        front: related(neg(BEHIND)),
        left: related(neg(RIGHT)),
    }
}

fn draw(scene: &Scene) -> RgbImage {
    let mut pixels = [160u8, 160, 155].repeat(WIDTH * HEIGHT);
    for o in &scene.objects {
        let (cx, cy) = (o.pixel_coords.0 as f64 / 10.0, o.pixel_coords.1 as f64 / 10.0);
        let r = if o.size == Size::Large { 4.0 } else { 2.5 };
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                let inside = match o.shape {
                    Shape::Sphere => dx * dx + dy * dy <= r * r,
                    Shape::Cube => dx.abs() <= r && dy.abs() <= r,
                    Shape::Cylinder => dx.abs() <= r * 0.8 && dy.abs() <= r * 1.2,
                };
                if inside {
                    let shine = if o.material == Material::Metal && dx < 0.0 && dy < 0.0 {
                        40
                    } else {
                        0
                    };
                    let c = o.color.rgb().map(|v| v.saturating_add(shine));
                    pixels[(y * WIDTH + x) * 3..(y * WIDTH + x) * 3 + 3].copy_from_slice(&c);
                }
            }
        }
    }
    RgbImage {
        width: WIDTH,
        height: HEIGHT,
        pixels,
    }
}

fn n(f: &str, inputs: &[usize]) -> ProgramNode {
    ProgramNode::new(f, inputs)
}
fn v(f: &str, inputs: &[usize], value: &str) -> ProgramNode {
    ProgramNode::with_value(f, inputs, value)
}

/// (family, question text, program) candidates asked of every scene.
fn templates() -> Vec<(usize, String, Vec<ProgramNode>)> {
    let mut out = Vec::new();
    for shape in ["cube", "sphere", "cylinder"] {
        out.push((
            0,
            format!("How many {shape}s are there?"),
            vec![n("scene", &[]), v("filter_shape", &[0], shape), n("count", &[1])],
        ));
    }
    for color in ["red", "blue", "yellow", "gray"] {
        out.push((
            1,
            format!("Are there any {color} things?"),
            vec![n("scene", &[]), v("filter_color", &[0], color), n("exist", &[1])],
        ));
        out.push((
            2,
            format!("What shape is the {color} thing?"),
            vec![
                n("scene", &[]),
                v("filter_color", &[0], color),
                n("unique", &[1]),
                n("query_shape", &[2]),
            ],
        ));
        out.push((
            3,
            format!("What number of things are left of the {color} object?"),
            vec![
                n("scene", &[]),
                v("filter_color", &[0], color),
                n("unique", &[1]),
                v("relate", &[2], "left"),
                n("count", &[3]),
            ],
        ));
    }
    out.push((
        4,
        "Are there fewer metal things than rubber things?".to_string(),
        vec![
            n("scene", &[]),
            v("filter_material", &[0], "metal"),
            n("count", &[1]),
            n("scene", &[]),
            v("filter_material", &[3], "rubber"),
            n("count", &[4]),
            n("less_than", &[2, 5]),
        ],
    ));
    out.push((
        5,
        "Is the large cube the same color as the small sphere?".to_string(),
        vec![
            n("scene", &[]),
            v("filter_size", &[0], "large"),
            v("filter_shape", &[1], "cube"),
            n("unique", &[2]),
            n("query_color", &[3]),
            n("scene", &[]),
            v("filter_size", &[5], "small"),
            v("filter_shape", &[6], "sphere"),
            n("unique", &[7]),
            n("query_color", &[8]),
            n("equal_color", &[4, 9]),
        ],
    ));
    out
}

fn scenes(split: &str) -> Vec<Vec<Spec>> {
    use Color::*;
    use Material::*;
    use Shape::*;
    use Size::*;
    match split {
        "train" => vec![
            vec![
                (Red, Cube, Metal, Large, [-1.5, -2.0]),
                (Blue, Sphere, Rubber, Small, [1.5, -1.0]),
                (Yellow, Cylinder, Rubber, Large, [0.0, 2.0]),
            ],
            vec![
                (Gray, Cube, Rubber, Large, [2.0, 0.5]),
                (Red, Sphere, Metal, Small, [-2.0, 1.0]),
                (Blue, Cube, Metal, Small, [0.0, -2.5]),
                (Gray, Sphere, Rubber, Small, [-0.5, 0.0]),
            ],
            vec![
                (Yellow, Sphere, Metal, Large, [0.5, 0.5]),
                (Blue, Cylinder, Rubber, Small, [-2.0, -2.0]),
            ],
        ],
        "val" => vec![
            vec![
                (Blue, Cube, Rubber, Large, [1.0, 1.0]),
                (Red, Sphere, Rubber, Small, [-1.0, -1.0]),
                (Gray, Cylinder, Metal, Small, [2.5, -2.0]),
            ],
            vec![
                (Yellow, Cube, Metal, Large, [-1.0, 2.0]),
                (Yellow, Sphere, Metal, Small, [1.0, -2.0]),
                (Red, Cylinder, Rubber, Large, [2.0, 1.5]),
            ],
        ],
        _ => vec![vec![
            (Gray, Sphere, Metal, Large, [0.0, 0.0]),
            (Red, Cube, Rubber, Small, [2.0, 2.0]),
        ]],
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string(value).unwrap()).unwrap();
}

fn main() {
    let root: PathBuf = std::env::args()
        .nth(1)
        .expect("usage: write_fixture OUT_DIR")
        .into();
    for split in ["train", "val", "test"] {
        let info = Info {
            split: split.to_string(),
            license: "MIT OR Apache-2.0 (hand-made film-rs test fixture)".to_string(),
            version: "1.0".to_string(),
            date: "2026".to_string(),
        };
        let mut scene_list = Vec::new();
        let mut questions = Vec::new();
        for (index, specs) in scenes(split).into_iter().enumerate() {
            let objects: Vec<Object> = specs.into_iter().map(object).collect();
            let scene = Scene {
                image_index: index,
                relationships: relationships(&objects),
                objects,
                image_filename: format!("CLEVR_{split}_{index:06}.png"),
                split: split.to_string(),
                directions: Directions {
                    right: RIGHT,
                    behind: BEHIND,
                    above: [0.0, 0.0, 1.0],
                    below: [0.0, 0.0, -1.0],
                    left: RIGHT.map(|c| -c),
                    front: BEHIND.map(|c| -c),
                },
            };
            let image_dir = root.join("images").join(split);
            std::fs::create_dir_all(&image_dir).unwrap();
            write_png(&image_dir.join(&scene.image_filename), &draw(&scene)).unwrap();
            for (family, text, program) in templates() {
                let answer = match execute(&program, &scene) {
                    Ok(answer) => answer.to_string(),
                    Err(ExecError::NotUnique { .. }) => continue,
                    Err(e) => panic!("template {text:?} is broken: {e}"),
                };
                let test = split == "test";
                questions.push(Question {
                    image_index: index,
                    program: (!test).then_some(program),
                    question_index: Some(questions.len()),
                    image_filename: scene.image_filename.clone(),
                    question_family_index: (!test).then_some(family),
                    split: split.to_string(),
                    answer: (!test).then_some(answer),
                    question: text,
                });
            }
            scene_list.push(scene);
        }
        println!(
            "{split}: {} scenes, {} questions",
            scene_list.len(),
            questions.len()
        );
        // CLEVR v1.0 releases no test scene graphs; neither does the fixture.
        if split != "test" {
            write_json(
                &root.join("scenes").join(format!("CLEVR_{split}_scenes.json")),
                &ScenesFile {
                    info: info.clone(),
                    scenes: scene_list,
                },
            );
        }
        write_json(
            &root
                .join("questions")
                .join(format!("CLEVR_{split}_questions.json")),
            &serde_json::json!({ "info": info, "questions": questions }),
        );
    }
}
