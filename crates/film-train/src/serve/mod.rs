//! `film-train serve`: one page and a JSON API to ask a trained run about an image, see
//! where it looks and the γ and β the question gives each block.
//!
//! The model is loaded once and shared by every request; inference runs on tokio's
//! blocking pool (see [`api`]), never on the executor's threads.

pub mod api;
pub mod gallery;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use tokio::sync::{oneshot, Semaphore};

use crate::ask::Asker;
use gallery::GalleryImage;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The trained run to serve (a pixel model: presets tiny, mini, paper-raw).
    #[arg(long)]
    pub run: PathBuf,
    /// The dataset whose validation images the page offers (default: the one the run was
    /// trained on).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where to listen. The default is reachable from this machine only; give another
    /// address (e.g. 0.0.0.0:8080) to serve the network.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Questions answered at once (default: the number of cores). Each holds an image and
    /// the model's activations, so this bounds the memory under load.
    #[arg(long)]
    pub workers: Option<usize>,
}

/// What every request shares: the model, the dataset images and the inference permits.
pub struct App {
    pub asker: Asker,
    pub gallery: Vec<GalleryImage>,
    permits: Arc<Semaphore>,
}

impl App {
    /// Loads `run` onto the CPU and the validation images of `data` (default: the run's
    /// dataset, skipped with a note when it is not there).
    pub fn load(run: &Path, data: Option<&Path>, workers: Option<usize>) -> Result<App> {
        let asker = Asker::load(run, &Device::Cpu)?;
        let gallery = match data {
            Some(data) => gallery::read_gallery(data)?,
            None => match gallery::read_gallery(&asker.config.data) {
                Ok(gallery) => gallery,
                Err(e) => {
                    eprintln!("note: no dataset images to offer ({e}); give --data DIR for some");
                    Vec::new()
                }
            },
        };
        let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Ok(App {
            asker,
            gallery,
            permits: Arc::new(Semaphore::new(workers.max(1))),
        })
    }
}

/// A server running on its own thread, stopped (gracefully) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one) and serves `app` on a new thread.
    pub fn start(app: App, addr: SocketAddr) -> Result<Server> {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("film-serve".into())
            .spawn(move || {
                run_until(listener, app, async {
                    // A dropped sender stops the server as a sent signal does.
                    let _ = stop.await;
                })
            })?;
        Ok(Server {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets requests in flight finish, and returns how serving ended.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

/// Serves `app` on `listener` until `stop` completes.
fn run_until(
    listener: TcpListener,
    app: App,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .thread_name("film-serve-io")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, api::router(Arc::new(app)))
            .with_graceful_shutdown(stop)
            .await
    })
}

/// `film-train serve`: loads the run and serves until Ctrl-C.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let app = App::load(&args.run, args.data.as_deref(), args.workers)?;
    let listener = TcpListener::bind(args.addr).with_context(|| format!("binding {}", args.addr))?;
    if !args.addr.ip().is_loopback() {
        eprintln!(
            "note: listening on {}, which other machines can reach; the default 127.0.0.1 keeps it local",
            args.addr
        );
    }
    println!(
        "serving {} ({} dataset images) on http://{}/ (Ctrl-C stops)",
        args.run.display(),
        app.gallery.len(),
        listener.local_addr()?
    );
    run_until(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .context("serving")
}
