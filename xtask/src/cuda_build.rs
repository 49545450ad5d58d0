//! `cargo xtask cuda-build`: the release `film-train`, film-layer's `cuda_check` and
//! film-train's `step_check` with the `cuda` feature, built on a machine that has neither a GPU nor a CUDA toolkit, for
//! Hopper GPUs (H100/H200) with a CUDA 13 driver.
//!
//! The toolkit comes from NVIDIA's CUDA 13.0 wheels on PyPI, installed with pip into a
//! virtual environment under the user's cache. Three things make it usable by candle's
//! build scripts:
//! - a CUDA_HOME made of symlinks into the wheels (`bin/`, `include/`, `nvvm/`, `lib64/`
//!   with the unversioned `libX.so` names the linker looks for);
//! - a link-time stub of the driver library `libcuda.so` (no wheel ships it; the real one
//!   comes with the driver on the GPU machine and is what the binary loads at run time);
//! - `CUDA_COMPUTE_CAP`, because there is no GPU to ask which architecture to compile for.
//!
//! Every step is idempotent: a second run installs nothing and rebuilds only what changed.
//!
//! With `--device-dir DIR` it also fills DIR with what a GPU machine needs for the prepared
//! run (`xtask/gpu-run.sh`): the binaries gzipped (a quarter of their size, for the 64 MiB
//! payload limit), the script as `run.sh`, and the PyTorch reference harness
//! `torch_film.py` when `--torch-script PATH` gives it (it is not part of the repository).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// The CUDA 13.0 wheels, every one pinned: nvcc, nvvm and crt unpinned would pull a newer
/// 13.x whose PTX (a newer `.version`) a CUDA 13.0 driver refuses to load.
const WHEELS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-cccl==13.0.85",
    // cuda_runtime headers and libcudart (candle-kernels links it).
    "nvidia-cuda-runtime==13.0.96",
    // libnvrtc: film-layer compiles its kernels at run time; needed here only to link.
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-curand==10.4.0.35",
    "nvidia-cublas==13.0.2.14",
    // libcudnn: film-conv's convolutions; needed here only to link (the GPU machine's
    // PyTorch brings its own cuDNN 9, which the binary loads).
    "nvidia-cudnn-cu13==9.13.0.50",
];

/// Hopper (H100, H200); candle-kernels turns 90 into `sm_90a`.
const DEFAULT_COMPUTE_CAP: &str = "90";

/// What is built, as (cargo arguments after `build --release --features cuda`, the
/// artefact under the release directory).
const ARTEFACTS: &[(&[&str], &str)] = &[
    (&["-p", "film-train", "--bin", "film-train"], "film-train"),
    (
        &["-p", "film-layer", "--example", "cuda_check"],
        "examples/cuda_check",
    ),
    (
        &["-p", "film-train", "--example", "step_check"],
        "examples/step_check",
    ),
];

/// The GPU run script, kept in the repository and written into `--device-dir`.
const GPU_RUN_SCRIPT: &str = include_str!("../gpu-run.sh");

/// What the device folder may weigh: the GPU machine takes 64 MiB of carried files.
const DEVICE_DIR_LIMIT: u64 = 60 << 20;

pub const USAGE: &str = "  cuda-build [--compute-cap N] [--device-dir DIR [--torch-script PATH]]
                             build the release film-train, cuda_check and
                             step_check with --features cuda, without GPU or
                             CUDA toolkit (the CUDA 13.0 compiler is pip-installed
                             under ~/.cache/film-rs-cuda);
                             stripped binaries land in target/cuda/; N defaults to 90
                             (H100/H200); DIR (e.g. .device) receives the GPU run:
                             run.sh, the binaries gzipped, and the PyTorch
                             harness torch_film.py from PATH";

/// The command line of `cuda-build`.
struct Options {
    compute_cap: String,
    device_dir: Option<PathBuf>,
    torch_script: Option<PathBuf>,
}

pub fn run(args: &[String]) -> Result<()> {
    let Options {
        compute_cap,
        device_dir,
        torch_script,
    } = parse_args(args)?;
    let root = super::workspace_root();
    let cache = cache_dir()?;
    let venv = cache.join("env");
    let cuda_home = cache.join("home");

    let wheels = install_wheels(&venv)?;
    link_cuda_home(&wheels, &cuda_home)?;
    let metadata = cargo_metadata(&root)?;
    build_driver_stub(&wheels, &cuda_home, &metadata.cudarc_sources)?;

    let out_dir = metadata.target_dir.join("cuda");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for (cargo_args, artefact) in ARTEFACTS {
        cargo_build(&root, &cuda_home, &compute_cap, cargo_args)?;
        let built = metadata.target_dir.join("release").join(artefact);
        let name = built.file_name().expect("artefacts are files");
        let dest = out_dir.join(name);
        fs::copy(&built, &dest)
            .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    }
    let binaries: Vec<PathBuf> = ARTEFACTS
        .iter()
        .map(|(_, artefact)| out_dir.join(Path::new(artefact).file_name().expect("a file")))
        .collect();
    println!("CUDA binaries (sm_{compute_cap}, stripped):");
    for path in &binaries {
        println!("  {} ({})", path.display(), mib(fs::metadata(path)?.len()));
    }
    if let Some(dir) = device_dir {
        write_device_dir(&root.join(dir), torch_script.as_deref(), &binaries)?;
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        compute_cap: DEFAULT_COMPUTE_CAP.into(),
        device_dir: None,
        torch_script: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("cuda-build: {flag} needs a value\n\nusage:\n{USAGE}"))?;
        match flag.as_str() {
            "--compute-cap" => {
                ensure!(
                    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
                    "--compute-cap {value:?}: expected digits such as 90"
                );
                options.compute_cap = value.clone();
            }
            "--device-dir" => options.device_dir = Some(value.into()),
            "--torch-script" => options.torch_script = Some(value.into()),
            _ => bail!("cuda-build: unknown option {flag:?}\n\nusage:\n{USAGE}"),
        }
    }
    ensure!(
        options.torch_script.is_none() || options.device_dir.is_some(),
        "cuda-build: --torch-script is copied into --device-dir, so it needs one"
    );
    Ok(options)
}

/// Fills `dir` with the GPU run: `run.sh`, `<binary>.gz` for each binary, `torch_film.py`.
fn write_device_dir(dir: &Path, torch_script: Option<&Path>, binaries: &[PathBuf]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Binaries of earlier builds that this one no longer makes would be carried for nothing
    // and count against the payload limit.
    let wanted: Vec<String> = binaries
        .iter()
        .filter_map(|b| b.file_name())
        .map(|name| format!("{}.gz", name.to_string_lossy()))
        .collect();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".gz") && !wanted.contains(&name) {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let script = dir.join("run.sh");
    fs::write(&script, GPU_RUN_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    for binary in binaries {
        let name = binary.file_name().and_then(|n| n.to_str()).expect("a file name");
        let packed = dir.join(format!("{name}.gz"));
        let file = fs::File::create(&packed).with_context(|| format!("creating {}", packed.display()))?;
        run_checked(Command::new("gzip").arg("-c").arg(binary).stdout(file))?;
    }
    match torch_script {
        Some(reference) => {
            fs::copy(reference, dir.join("torch_film.py"))
                .with_context(|| format!("copying --torch-script {}", reference.display()))?;
        }
        None => eprintln!("[cuda-build] warning: no --torch-script given; the run's PyTorch steps will fail"),
    }
    let mut total = 0;
    println!("GPU run in {}:", dir.display());
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let bytes = entry.metadata()?.len();
        total += bytes;
        println!("  {} ({})", entry.file_name().to_string_lossy(), mib(bytes));
    }
    ensure!(
        total <= DEVICE_DIR_LIMIT,
        "{} holds {}, more than the {} a GPU machine takes; remove what run.sh does not need",
        dir.display(),
        mib(total),
        mib(DEVICE_DIR_LIMIT)
    );
    Ok(())
}

/// `$XDG_CACHE_HOME/film-rs-cuda`, else `~/.cache/film-rs-cuda`: outside the repository,
/// so that a clean clone reuses the toolchain.
fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?)
            .join(".cache"),
    };
    Ok(base.join("film-rs-cuda"))
}

/// Runs `cmd`, failing with its command line if it cannot start or exits non-zero.
fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}

/// Runs `cmd` and returns its standard output.
fn output_of(cmd: &mut Command) -> Result<String> {
    let output = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(
        output.status.success(),
        "{cmd:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8"))
}

/// Creates the virtual environment and installs [`WHEELS`] unless a marker says this exact
/// list is already there; returns the wheels' CUDA tree (`site-packages/nvidia/cu13`).
fn install_wheels(venv: &Path) -> Result<PathBuf> {
    let python = venv.join("bin/python");
    if !python.exists() {
        let system_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        eprintln!("[cuda-build] creating the virtual environment {}", venv.display());
        run_checked(Command::new(system_python).args(["-m", "venv"]).arg(venv))?;
    }
    let marker = venv.join(".cuda-recipe-pins");
    let wanted: String = WHEELS.iter().map(|w| format!("{w}\n")).collect();
    if fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        eprintln!("[cuda-build] installing the CUDA 13.0 and cuDNN 9 wheels (about 2.2 GB on disk)");
        run_checked(
            Command::new(&python)
                .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
                .args(WHEELS),
        )?;
        fs::write(&marker, wanted).with_context(|| format!("writing {}", marker.display()))?;
    }
    let site = output_of(
        Command::new(&python).args(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]),
    )?;
    let cuda = PathBuf::from(site.trim()).join("nvidia/cu13");
    for tool in ["bin/nvcc", "nvvm/bin/cicc"] {
        ensure!(
            cuda.join(tool).exists(),
            "{} is missing after installing the wheels",
            cuda.join(tool).display()
        );
    }
    Ok(cuda)
}

/// Replaces whatever is at `link` by a symlink to `target`.
fn symlink(target: &Path, link: &Path) -> Result<()> {
    if link.symlink_metadata().is_ok() {
        fs::remove_file(link).with_context(|| format!("removing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

/// The CUDA_HOME layout candle's build scripts expect, as symlinks into the wheels.
fn link_cuda_home(wheels: &Path, home: &Path) -> Result<()> {
    let lib64 = home.join("lib64");
    fs::create_dir_all(lib64.join("stubs")).with_context(|| format!("creating {}", lib64.display()))?;
    for dir in ["bin", "include", "nvvm"] {
        symlink(&wheels.join(dir), &home.join(dir))?;
    }
    symlink(Path::new("lib64"), &home.join("lib"))?;
    // cuDNN's wheel keeps its libraries beside the toolkit's: nvidia/cudnn/lib.
    let cudnn = wheels.parent().map(|nvidia| nvidia.join("cudnn/lib"));
    for libs in [Some(wheels.join("lib")), cudnn].into_iter().flatten() {
        for entry in fs::read_dir(&libs).with_context(|| format!("reading {}", libs.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            // libcublas.so.13 keeps its name and also becomes libcublas.so for `-lcublas`.
            if let Some((stem, _)) = name.split_once(".so.") {
                symlink(&path, &lib64.join(name))?;
                symlink(&path, &lib64.join(format!("{stem}.so")))?;
            }
        }
    }
    Ok(())
}

/// What cuda-build needs from `cargo metadata` with the `cuda` feature on.
struct Metadata {
    target_dir: PathBuf,
    /// cudarc's driver bindings, whose function names the driver stub must define.
    cudarc_sources: Vec<PathBuf>,
}

fn cargo_metadata(root: &Path) -> Result<Metadata> {
    let json = output_of(Command::new(cargo()).current_dir(root).args([
        "metadata",
        "--format-version",
        "1",
        "--features",
        "film-train/cuda",
    ]))?;
    let value: serde_json::Value = serde_json::from_str(&json).context("parsing cargo metadata")?;
    let target_dir = value["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?
        .into();
    let cudarc_sources: Vec<PathBuf> = value["packages"]
        .as_array()
        .context("cargo metadata has no packages")?
        .iter()
        .filter(|p| p["name"] == "cudarc")
        .filter_map(|p| p["manifest_path"].as_str())
        .map(|manifest| Path::new(manifest).with_file_name("src/driver/sys/mod.rs"))
        .collect();
    ensure!(
        !cudarc_sources.is_empty(),
        "cargo metadata with film-train/cuda lists no cudarc package"
    );
    Ok(Metadata {
        target_dir,
        cudarc_sources,
    })
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Names `cu<Upper>…` written as a call or declaration, `name(` or `name (`, in `text`:
/// the driver API functions in cuda.h and in cudarc's bindings.
fn driver_functions(text: &str, names: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let word = &text[start..i];
        let rest = text[i..].trim_start_matches([' ', '\t']);
        let is_driver_name =
            word.len() > 2 && word.starts_with("cu") && word.as_bytes()[2].is_ascii_uppercase();
        if is_driver_name && rest.starts_with('(') {
            names.insert(word.to_string());
        }
    }
}

/// `lib64/stubs/libcuda.so`: every driver function as an empty body, with the real
/// library's SONAME so that the binary asks for `libcuda.so.1` at run time. Rebuilt only
/// when the set of names changes.
fn build_driver_stub(wheels: &Path, home: &Path, cudarc_sources: &[PathBuf]) -> Result<()> {
    let mut names = BTreeSet::new();
    for source in cudarc_sources {
        let text = fs::read_to_string(source).with_context(|| format!("reading {}", source.display()))?;
        driver_functions(&text, &mut names);
    }
    let include = wheels.join("include");
    let header = output_of(
        Command::new("gcc")
            .args(["-E", "-P"])
            .arg(format!("-I{}", include.display()))
            .arg(include.join("cuda.h")),
    )?;
    driver_functions(&header, &mut names);

    let stubs = home.join("lib64/stubs");
    let library = stubs.join("libcuda.so");
    let list = stubs.join("libcuda.syms");
    let wanted: String = names.iter().map(|n| format!("{n}\n")).collect();
    if library.exists() && fs::read_to_string(&list).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    eprintln!(
        "[cuda-build] building the libcuda.so link stub ({} functions)",
        names.len()
    );
    let source = stubs.join("cuda_stub.c");
    let body: String =
        std::iter::once("/* link-time stub of libcuda.so.1; never loaded at run time */\n".to_string())
            .chain(names.iter().map(|n| format!("int {n}(void){{return 999;}}\n")))
            .collect();
    fs::write(&source, body).with_context(|| format!("writing {}", source.display()))?;
    run_checked(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-O0", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(&library)
            .arg(&source),
    )?;
    fs::write(&list, wanted).with_context(|| format!("writing {}", list.display()))
}

/// `cargo build --release --features cuda ARGS` with the wheels' toolkit in charge.
fn cargo_build(root: &Path, home: &Path, compute_cap: &str, args: &[&str]) -> Result<()> {
    let prepend = |var: &str, dir: PathBuf| -> Result<std::ffi::OsString> {
        let mut paths = vec![dir];
        if let Some(old) = std::env::var_os(var) {
            paths.extend(std::env::split_paths(&old));
        }
        std::env::join_paths(paths).with_context(|| format!("building {var}"))
    };
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root)
        .args(["build", "--release", "--features", "cuda"])
        .args(args)
        .env("CUDA_HOME", home)
        .env("CUDA_COMPUTE_CAP", compute_cap)
        .env("PATH", prepend("PATH", home.join("bin"))?)
        .env("LD_LIBRARY_PATH", prepend("LD_LIBRARY_PATH", home.join("lib64"))?);
    // Any of these would point candle's build scripts at another toolkit.
    for var in [
        "CUDA_PATH",
        "CUDA_ROOT",
        "CUDA_TOOLKIT_ROOT_DIR",
        "NVCC",
        "NVCC_CCBIN",
        "CUDARC_CUDA_VERSION",
    ] {
        cmd.env_remove(var);
    }
    eprintln!(
        "[cuda-build] cargo build --release --features cuda {}",
        args.join(" ")
    );
    run_checked(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn options_default_to_hopper_and_no_device_dir() {
        let options = parse_args(&[]).unwrap();
        assert_eq!(options.compute_cap, "90");
        assert_eq!(options.device_dir, None);
        let options = parse_args(&strings(&["--device-dir", ".device", "--compute-cap", "80"])).unwrap();
        assert_eq!(options.compute_cap, "80");
        assert_eq!(options.device_dir, Some(PathBuf::from(".device")));
        assert_eq!(options.torch_script, None);
        let options = parse_args(&strings(&["--device-dir", "d", "--torch-script", "t.py"])).unwrap();
        assert_eq!(options.torch_script, Some(PathBuf::from("t.py")));
    }

    #[test]
    fn bad_options_are_refused() {
        for args in [
            &["--compute-cap"][..],
            &["--compute-cap", "sm_90"],
            &["--fast", "1"],
            &["--torch-script", "t.py"],
        ] {
            assert!(parse_args(&strings(args)).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn driver_functions_are_calls_of_cu_upper_names() {
        let mut names = BTreeSet::new();
        driver_functions(
            "pub fn cuInit(flags: u32) -> CUresult;\nCUresult cuMemAlloc_v2 (CUdeviceptr *p);\n\
             cudaError cudaMalloc(void*); typedef struct CUctx_st *CUcontext; cuuint32_t x;",
            &mut names,
        );
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["cuInit", "cuMemAlloc_v2"]);
    }
}
