//! Two-dimensional embeddings of per-question FiLM parameters by principal component
//! analysis. PCA rather than t-SNE (the paper's choice): it is deterministic, has no
//! perplexity or iteration count to tune, its axes are linear directions in parameter
//! space whose share of the variance can be reported, and distances between clusters mean
//! something, which t-SNE does not promise. It needs no dependency.

/// Power-iteration rounds per component; convergence is checked before.
const MAX_ITERATIONS: usize = 1000;
const TOLERANCE: f64 = 1e-10;

/// The projection of `n` rows of `dim` values on their first two principal components.
#[derive(Clone, Debug)]
pub struct Projection {
    /// (PC1, PC2) of each row.
    pub points: Vec<(f64, f64)>,
    /// Share of the total variance along PC1 and PC2.
    pub explained: [f64; 2],
}

/// Projects the rows of `data` (row-major, `dim` columns) on their top two principal
/// components. Each component's sign is fixed so that its largest coordinate is
/// positive, which makes the picture reproducible.
pub fn pca_2d(data: &[f32], dim: usize) -> Projection {
    assert!(
        dim > 0 && data.len().is_multiple_of(dim),
        "PCA input must be whole rows"
    );
    let n = data.len() / dim;
    let mut mean = vec![0f64; dim];
    for row in data.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n as f64;
        }
    }
    let mut cov = vec![0f64; dim * dim];
    for row in data.chunks_exact(dim) {
        let centred: Vec<f64> = row.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] += centred[i] * centred[j];
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            let v = cov[i * dim + j] / n.max(1) as f64;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    let total: f64 = (0..dim).map(|i| cov[i * dim + i]).sum();
    let (v1, l1) = top_eigenvector(&cov, dim);
    deflate(&mut cov, dim, &v1, l1);
    let (v2, l2) = top_eigenvector(&cov, dim);
    let points = data
        .chunks_exact(dim)
        .map(|row| {
            let project = |v: &[f64]| -> f64 {
                row.iter()
                    .zip(&mean)
                    .zip(v)
                    .map(|((&x, m), e)| (x as f64 - m) * e)
                    .sum()
            };
            (project(&v1), project(&v2))
        })
        .collect();
    let share = |l: f64| if total > 0.0 { l.max(0.0) / total } else { 0.0 };
    Projection {
        points,
        explained: [share(l1), share(l2)],
    }
}

/// The dominant eigenvector of the symmetric positive semi-definite `m` and its eigenvalue.
fn top_eigenvector(m: &[f64], dim: usize) -> (Vec<f64>, f64) {
    // A fixed, uneven start: not orthogonal to any eigenvector in practice, and the same
    // every run.
    let mut v: Vec<f64> = (0..dim).map(|i| 1.0 + (i as f64 * 0.618_034).fract()).collect();
    normalize(&mut v);
    let mut eigenvalue = 0.0;
    for _ in 0..MAX_ITERATIONS {
        let mut next = vec![0f64; dim];
        for (i, out) in next.iter_mut().enumerate() {
            *out = (0..dim).map(|j| m[i * dim + j] * v[j]).sum();
        }
        let norm = normalize(&mut next);
        let change: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
        v = next;
        eigenvalue = norm;
        if norm == 0.0 || change < TOLERANCE {
            break;
        }
    }
    let largest = v
        .iter()
        .copied()
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))
        .unwrap_or(0.0);
    if largest < 0.0 {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    (v, eigenvalue)
}

fn deflate(m: &mut [f64], dim: usize, v: &[f64], eigenvalue: f64) {
    for i in 0..dim {
        for j in 0..dim {
            m[i * dim + j] -= eigenvalue * v[i] * v[j];
        }
    }
}

fn normalize(v: &mut [f64]) -> f64 {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_axes_of_a_hand_made_cloud() {
        // Coordinates a along (1, 1, 0)/√2 and b along (1, -1, 0)/√2, constant third axis;
        // a and b have mean 0 and Σ a·b = 0, so they are the principal axes.
        let mut data = Vec::new();
        for &(a, b) in &[
            (-10.0f32, 1.0f32),
            (-5.0, -1.0),
            (0.0, 0.0),
            (5.0, -1.0),
            (10.0, 1.0),
        ] {
            let s = std::f32::consts::FRAC_1_SQRT_2;
            data.extend_from_slice(&[s * (a + b), s * (a - b), 3.0]);
        }
        let p = pca_2d(&data, 3);
        let pc1: Vec<f64> = p.points.iter().map(|p| p.0).collect();
        let pc2: Vec<f64> = p.points.iter().map(|p| p.1.abs()).collect();
        for (got, want) in pc1.iter().zip([-10.0, -5.0, 0.0, 5.0, 10.0]) {
            assert!((got.abs() - f64::abs(want)).abs() < 1e-6, "PC1 {pc1:?}");
        }
        for (got, want) in pc2.iter().zip([1.0, 1.0, 0.0, 1.0, 1.0]) {
            assert!((got - want).abs() < 1e-6, "PC2 {pc2:?}");
        }
        // Variances 250/5 = 50 and 4/5 = 0.8.
        assert!((p.explained[0] - 50.0 / 50.8).abs() < 1e-9, "{:?}", p.explained);
        assert!((p.explained[1] - 0.8 / 50.8).abs() < 1e-9, "{:?}", p.explained);
    }
}
