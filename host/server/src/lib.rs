//! `ferry serve`: runs pipelines when something happens to a repository.
//!
//! ```text
//! webhook / poll / schedule ─▶ delivery (kept, deduplicated) ─intake─▶ queued run
//!     ─dispatch (runs and jobs bounded)─▶ worktree at the commit ─Executor─▶ engine
//!     ─events─▶ store (status), live channel (dashboard), run record (logs on disk)
//! ```
//!
//! Every step of that path is persisted before the next one starts, so a server that is
//! killed loses nothing: pending deliveries are taken on restart, queued runs stay queued,
//! and a run that was going is marked interrupted (and re-run when configured to).
//!
//! The server knows no WebAssembly: it runs pipelines through an [`Executor`], which the
//! `ferry` binary implements with the sandbox.

pub mod api;
pub mod forge;
pub mod gitnames;
pub mod guard;
pub mod hooks;
pub mod http;
pub mod live;
pub mod replay;
pub mod repo;
pub mod sqlite;
pub mod store;

mod queue;

use ferry_engine::{CancellationToken, Reporter, RunResult};
use ferry_model::Pipeline;
use repo::{Repo, RepoConfig};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use store::Store;
use tokio::sync::{Notify, Semaphore};

/// How a server runs.
pub struct Config {
    pub listen: SocketAddr,
    /// The database, mirrors, checkouts and run records.
    pub data: PathBuf,
    pub repos: Vec<RepoConfig>,
    /// Runs executing at once; more wait in the queue.
    pub max_runs: usize,
    /// Jobs executing at once, over every run.
    pub max_jobs: usize,
    pub auth: Auth,
    /// Finished runs to keep; older ones and their records are deleted.
    pub keep_runs: usize,
    /// Runs a restart found interrupted are queued again.
    pub retry_interrupted: bool,
    /// The address people reach the dashboard at, for links in commit statuses.
    pub public_url: Option<String>,
}

/// Who may do what.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// A bearer token for the API and the dashboard.
    pub token: Option<String>,
    /// User names and passwords (HTTP basic authentication).
    pub users: BTreeMap<String, String>,
    /// Anyone may read runs and logs; changing anything still needs a token or a user.
    pub public: bool,
}

/// One run for the executor: the pipeline, checked out, and how to report it.
pub struct Execution {
    pub pipeline: Pipeline,
    /// The checkout at the run's commit.
    pub source_dir: PathBuf,
    /// The repository's `.ferry/`, kept between runs (caches, deployments).
    pub state_dir: PathBuf,
    /// `git.*` for expressions.
    pub git: BTreeMap<String, String>,
    pub inputs: BTreeMap<String, String>,
    /// `false` for a fork's change that the target branch does not trust: the run gets no
    /// secrets and nothing of the host's environment.
    pub trusted: bool,
    pub reporter: Arc<dyn Reporter>,
    pub cancel: CancellationToken,
    /// Job slots shared by every run of the server.
    pub slots: Arc<Semaphore>,
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Loads and runs pipelines the way `ferry run` does.
pub trait Executor: Send + Sync + 'static {
    /// Parses and validates pipeline text read from `file`; the error is the report people
    /// read, with file:line:col.
    fn parse(&self, file: &Path, text: &str) -> Result<Pipeline, String>;
    /// Resolves plugins, checks grants and runs. The error says why it could not start.
    fn execute(&self, execution: Execution) -> BoxFuture<Result<RunResult, String>>;
}

/// The server's state, shared by the HTTP handlers and the background tasks.
pub struct Server {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub executor: Arc<dyn Executor>,
    pub repos: Vec<Arc<Repo>>,
    pub live: live::Live,
    /// Dashboard sessions, and wrong sign-ins counted against who tried them.
    pub(crate) sessions: guard::Sessions,
    pub(crate) sign_in: guard::Attempts,
    /// Cancel tokens of runs executing now.
    active: Mutex<HashMap<i64, CancellationToken>>,
    intake: Notify,
    dispatch: Notify,
    run_slots: Arc<Semaphore>,
    job_slots: Arc<Semaphore>,
    /// Set while the server shuts down: runs it stops are left for the next start to
    /// mark interrupted (and retry), as after a crash.
    stopping: std::sync::atomic::AtomicBool,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create `{0}`: {1}")]
    Data(PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("two repositories are named `{0}`")]
    Duplicate(String),
}

impl Server {
    /// Opens the store in `config.data` and recovers what a previous server left.
    pub fn new(config: Config, executor: Arc<dyn Executor>) -> Result<Arc<Server>, StartError> {
        std::fs::create_dir_all(&config.data)
            .map_err(|e| StartError::Data(config.data.clone(), e))?;
        let store = Arc::new(sqlite::Sqlite::open(&config.data.join("ferry.db"))?);
        Server::with_store(config, executor, store)
    }

    /// A server over any store.
    pub fn with_store(
        config: Config,
        executor: Arc<dyn Executor>,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Server>, StartError> {
        let mut names = std::collections::BTreeSet::new();
        for repo in &config.repos {
            if !names.insert(repo.name.clone()) {
                return Err(StartError::Duplicate(repo.name.clone()));
            }
        }
        let repos = config
            .repos
            .iter()
            .map(|r| Arc::new(Repo::new(r.clone(), &config.data)))
            .collect();
        let server = Arc::new(Server {
            run_slots: Arc::new(Semaphore::new(config.max_runs.max(1))),
            job_slots: Arc::new(Semaphore::new(config.max_jobs.max(1))),
            config,
            store,
            executor,
            repos,
            live: live::Live::default(),
            sessions: Default::default(),
            sign_in: Default::default(),
            active: Mutex::default(),
            intake: Notify::new(),
            dispatch: Notify::new(),
            stopping: Default::default(),
        });
        server.recover()?;
        Ok(server)
    }

    /// Marks what a stopped server left running as interrupted, and queues it again when
    /// configured to.
    fn recover(&self) -> Result<(), store::StoreError> {
        let now = ferry_engine::record::now_ms();
        // Worktrees of runs that were going; the mirrors forget them at their next fetch.
        let _ = std::fs::remove_dir_all(self.config.data.join("checkouts"));
        for repo in &self.repos {
            ferry_engine::record::recover_interrupted(&repo.state_dir(&self.config.data));
        }
        for id in self.store.interrupt_running(now)? {
            eprintln!("note: run #{id} was going when the server stopped; marked interrupted");
            if self.config.retry_interrupted {
                let again = self.rerun(id)?;
                eprintln!("note: run #{id} queued again as #{again}");
            }
        }
        Ok(())
    }

    pub fn repo(&self, name: &str) -> Option<&Arc<Repo>> {
        self.repos.iter().find(|r| r.config.name == name)
    }

    /// Listens and serves until `stop` resolves: the API, hooks and dashboard, and the
    /// tasks that take deliveries, poll, fire schedules and run the queue. On `stop` it
    /// cancels the runs going (a restart marks them interrupted and, when configured,
    /// queues them again) and waits for them to wind down.
    pub async fn serve(
        self: Arc<Server>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let listener = tokio::net::TcpListener::bind(self.config.listen)
            .await
            .map_err(|e| StartError::Listen(self.config.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Listen(self.config.listen, e))?;
        self.start_background();
        eprintln!("ferry serve: listening on http://{addr}");
        let server = self.clone();
        let shutdown = async move {
            stop.await;
            eprintln!("ferry serve: stopping; runs going now are picked up at the next start");
            server
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            for token in lock(&server.active).values() {
                token.cancel();
            }
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            while !lock(&server.active).is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        http::serve(listener, api::router(self.clone()), shutdown)
            .await
            .map_err(|e| StartError::Listen(addr, e))
    }

    /// Starts the background tasks (what `serve` does besides HTTP).
    pub fn start_background(self: &Arc<Server>) {
        tokio::spawn(self.clone().intake_loop());
        tokio::spawn(self.clone().dispatch_loop());
        tokio::spawn(self.clone().schedule_loop());
        for repo in &self.repos {
            if let Some(every) = repo.config.poll {
                tokio::spawn(self.clone().poll_loop(repo.clone(), every));
            }
        }
    }

    /// Queues a run of the same commit as run `id`; returns the new run's id.
    pub fn rerun(&self, id: i64) -> Result<i64, store::StoreError> {
        let run = self
            .store
            .run(id)?
            .ok_or_else(|| store::StoreError(format!("there is no run #{id}")))?;
        let mut source = run.source;
        source.rerun_of = Some(id);
        let new = self
            .store
            .add_run(&source, ferry_engine::record::now_ms())?;
        self.dispatch.notify_one();
        Ok(new)
    }

    /// Asks a queued or running run to stop. False when it had already finished.
    pub fn cancel(&self, id: i64) -> Result<bool, store::StoreError> {
        if let Some(token) = lock(&self.active).get(&id) {
            token.cancel();
            return Ok(true);
        }
        match self.store.run(id)? {
            Some(run) if !run.status.finished() => {
                self.store.finish_run(
                    id,
                    store::RunStatus::Cancelled,
                    ferry_engine::record::now_ms(),
                    Some("cancelled before it started"),
                )?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The run's record directory, once the engine has started it.
    pub fn record_dir(&self, run: &store::Run) -> Option<PathBuf> {
        let record = run.record.as_deref()?;
        let repo = self.repo(&run.source.repo)?;
        Some(repo.state_dir(&self.config.data).join("runs").join(record))
    }

    /// The repository's `.ferry/`.
    pub fn state_dir(&self, repo: &str) -> Option<PathBuf> {
        Some(self.repo(repo)?.state_dir(&self.config.data))
    }

    /// The dashboard link of a run.
    pub fn run_url(&self, id: i64) -> String {
        let base = self
            .config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.config.listen));
        format!("{}/runs/{id}", base.trim_end_matches('/'))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
