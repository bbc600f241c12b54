//! From what happened to a finished run: intake, polling, schedules, dispatch, execution.

use crate::repo::{Repo, short};
use crate::store::{Job, Progress, Run, RunStatus, Source, Step, StoreError, TriggerKind};
use crate::{Execution, Server, lock};
use ferry_engine::record::now_ms;
use ferry_engine::{CancellationToken, Event, Reporter};
use ferry_model::triggers::{GitRef, Happened};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the loops look again even when nobody woke them: a safety net, not the
/// path a hook takes.
const IDLE: Duration = Duration::from_secs(5);

impl Server {
    /// Keeps a delivery and wakes the intake; `None` when it was seen before (see
    /// [`crate::store::Store::add_delivery`]).
    pub fn deliver(
        &self,
        key: &str,
        body: Option<&str>,
        source: &Source,
    ) -> Result<Option<i64>, StoreError> {
        let id = self.store.add_delivery(key, body, source, now_ms())?;
        if id.is_some() {
            self.intake.notify_one();
        }
        Ok(id)
    }

    pub(crate) async fn intake_loop(self: Arc<Server>) {
        loop {
            match self.store.pending_deliveries() {
                Ok(pending) => {
                    for delivery in pending {
                        if let Err(e) = self.take(delivery.id, delivery.source).await {
                            eprintln!("error: delivery {}: {e}", delivery.key);
                        }
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            }
            let _ = tokio::time::timeout(IDLE, self.intake.notified()).await;
        }
    }

    /// Turns one delivery into a run, or settles it with the reason it runs nothing.
    async fn take(&self, delivery: i64, mut source: Source) -> Result<(), StoreError> {
        let Some(repo) = self.repo(&source.repo).cloned() else {
            return self
                .store
                .ignore_delivery(delivery, "the repository is no longer configured");
        };
        let now = now_ms();
        // Usually the mirror has the commit already: ask for the file first and fetch only
        // when that fails.
        let pipeline = match repo.pipeline_at(&source.sha).await {
            Ok(text) => Ok(text),
            Err(_) => match repo.ensure(&source.sha).await {
                Ok(()) => repo.pipeline_at(&source.sha).await,
                Err(e) => Err(e),
            },
        };
        let text = match pipeline {
            Ok(text) => text,
            // A commit without a pipeline file asks for nothing, as a repository without
            // workflows does on GitHub.
            Err(e) => return self.store.ignore_delivery(delivery, &e),
        };
        if source.message.is_empty() || source.author.is_empty() {
            let (message, author) = repo.describe(&source.sha).await;
            if source.message.is_empty() {
                source.message = message;
            }
            if source.author.is_empty() {
                source.author = author;
            }
        }
        let file = PathBuf::from(&repo.config.pipeline);
        let pipeline = match self.executor.parse(&file, &text) {
            Ok(pipeline) => pipeline,
            Err(report) => {
                // A broken pipeline file is a run that failed to start: people need to see it.
                let id = self.store.accept_delivery(delivery, &source, now)?;
                return self
                    .store
                    .finish_run(id, RunStatus::Error, now, Some(&report));
            }
        };
        let wanted = match source.trigger {
            TriggerKind::Push => GitRef::parse(&source.reference).is_some_and(|reference| {
                pipeline.on.wants(&Happened::Push {
                    reference,
                    paths: source.paths.clone(),
                })
            }),
            TriggerKind::PullRequest => pipeline.on.wants(&Happened::PullRequest {
                base: source.base.clone().unwrap_or_default(),
                paths: source.paths.clone(),
            }),
            TriggerKind::Schedule | TriggerKind::Manual => true,
        };
        if !wanted {
            let what = format!(
                "`on:` in `{}` does not take a {} of `{}`",
                repo.config.pipeline,
                source.trigger.as_str(),
                source.reference
            );
            return self.store.ignore_delivery(delivery, &what);
        }
        self.store.accept_delivery(delivery, &source, now)?;
        self.dispatch.notify_one();
        Ok(())
    }

    pub(crate) async fn dispatch_loop(self: Arc<Server>) {
        loop {
            match self.store.queued() {
                Ok(queued) => {
                    for run in queued {
                        if lock(&self.active).contains_key(&run.id) {
                            continue;
                        }
                        let Ok(permit) = self.run_slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let cancel = CancellationToken::new();
                        lock(&self.active).insert(run.id, cancel.clone());
                        let server = self.clone();
                        tokio::spawn(async move {
                            let id = run.id;
                            server.execute(run, cancel).await;
                            lock(&server.active).remove(&id);
                            drop(permit);
                            server.dispatch.notify_one();
                        });
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            }
            let _ = tokio::time::timeout(IDLE, self.dispatch.notified()).await;
        }
    }

    /// Runs one queued run to its end and records how it went.
    async fn execute(self: &Arc<Server>, run: Run, cancel: CancellationToken) {
        let id = run.id;
        match self.store.start_run(id, now_ms()) {
            Ok(true) => {}
            // Cancelled between the queue and here.
            Ok(false) => return,
            Err(e) => {
                eprintln!("error: run #{id}: {e}");
                return;
            }
        }
        let (status, error) = match self.try_execute(&run, cancel).await {
            Ok(status) => (status, None),
            Err(e) => (RunStatus::Error, Some(e)),
        };
        self.live.close(id);
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            // Left `running`: the next start marks it interrupted, as after a crash.
            return;
        }
        if let Err(e) = self
            .store
            .finish_run(id, status, now_ms(), error.as_deref())
        {
            eprintln!("error: run #{id}: {e}");
        }
        self.keep_deployments(id);
        self.report_status(&run, status);
        self.retain();
    }

    async fn try_execute(
        self: &Arc<Server>,
        run: &Run,
        cancel: CancellationToken,
    ) -> Result<RunStatus, String> {
        let repo = self
            .repo(&run.source.repo)
            .cloned()
            .ok_or_else(|| format!("repository `{}` is not configured", run.source.repo))?;
        self.report_status(run, RunStatus::Running);
        let checkout = self.config.data.join("checkouts").join(run.id.to_string());
        if repo.checkout(&run.source.sha, &checkout).await.is_err() {
            // A re-run of a commit the mirror no longer has, or a manual run of a new one.
            repo.ensure(&run.source.sha).await?;
            repo.checkout(&run.source.sha, &checkout).await?;
        }
        let result = self.run_checkout(&repo, run, &checkout, cancel).await;
        repo.remove_checkout(&checkout).await;
        result
    }

    async fn run_checkout(
        self: &Arc<Server>,
        repo: &Repo,
        run: &Run,
        checkout: &std::path::Path,
        cancel: CancellationToken,
    ) -> Result<RunStatus, String> {
        let file = checkout.join(&repo.config.pipeline);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "commit `{}` has no `{}`: {e}",
                short(&run.source.sha),
                repo.config.pipeline
            )
        })?;
        let pipeline = self.executor.parse(&file, &text)?;
        let inputs = match &pipeline.on.manual {
            Some(manual) if run.source.trigger == TriggerKind::Manual => manual
                .inputs(&run.source.inputs)
                .map_err(|problems| problems.join("\n"))?,
            _ => run.source.inputs.clone(),
        };
        let trusted = !run.source.fork || self.trusts_forks(repo, run).await;
        let channel = self.live.open(run.id);
        let reporter = Arc::new(RunReporter {
            run: run.id,
            server: self.clone(),
            channel,
            steps: Mutex::default(),
        });
        let result = self
            .executor
            .execute(Execution {
                pipeline,
                source_dir: checkout.to_path_buf(),
                state_dir: repo.state_dir(&self.config.data),
                git: git_info(&run.source),
                inputs,
                trusted,
                reporter,
                cancel,
                slots: self.job_slots.clone(),
            })
            .await?;
        Ok(result.status.into())
    }

    /// Whether the pull request's target branch trusts forks with secrets
    /// (`on.pull_request.fork-secrets`). Read from the target branch, never from the
    /// fork's own pipeline file, which the fork writes; no answer is no.
    async fn trusts_forks(&self, repo: &Repo, run: &Run) -> bool {
        let Some(base) = run.source.base.as_deref().filter(|b| !b.is_empty()) else {
            return false;
        };
        match self.pipeline_of(repo, &format!("refs/heads/{base}")).await {
            Ok((_, _, pipeline)) => {
                (pipeline.on.pull_request.as_ref()).is_some_and(|e| e.fork_secrets)
            }
            Err(e) => {
                eprintln!(
                    "warning: run #{}: `{base}`'s pipeline could not be read, so the fork is not trusted: {e}",
                    run.id
                );
                false
            }
        }
    }

    /// Tells the forge how the commit's run stands, when a token is configured. Off the
    /// runtime: a slow forge must not hold up runs.
    fn report_status(&self, run: &Run, status: RunStatus) {
        let Some(target) = self
            .repo(&run.source.repo)
            .and_then(|r| r.config.status.clone())
        else {
            return;
        };
        let sha = run.source.sha.clone();
        let url = self.run_url(run.id);
        let description = match status {
            RunStatus::Queued => "queued".to_string(),
            RunStatus::Running => "running".to_string(),
            other => format!("run #{} {}", run.id, other.as_str()),
        };
        tokio::task::spawn_blocking(move || {
            let status = crate::forge::Status {
                sha: &sha,
                status,
                description: &description,
                url: &url,
            };
            if let Err(e) = target.report(&status) {
                eprintln!("warning: commit status for `{}`: {e}", short(&sha));
            }
        });
    }

    /// Copies what the run did to environments from the repository's deployment history
    /// into the store, where the API lists it across runs.
    fn keep_deployments(&self, id: i64) {
        let Ok(Some(run)) = self.store.run(id) else {
            return;
        };
        let (Some(record), Some(state)) = (&run.record, self.state_dir(&run.source.repo)) else {
            return;
        };
        let entries: Vec<_> = ferry_engine::deployments::read(&state)
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.run == *record)
            .collect();
        if !entries.is_empty()
            && let Err(e) = self.store.add_deployments(id, &run.source.repo, &entries)
        {
            eprintln!("error: run #{id}: {e}");
        }
    }

    /// Deletes the oldest finished runs past the retention limit, with their records.
    fn retain(&self) {
        match self.store.prune(self.config.keep_runs) {
            Ok(old) => {
                for run in old {
                    if let Some(dir) = self.record_dir(&run) {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                }
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }

    /// Looks for new commits every `every`. The first look only notes what is there: a
    /// server that starts does not build every branch.
    pub(crate) async fn poll_loop(self: Arc<Server>, repo: Arc<Repo>, every: Duration) {
        loop {
            if let Err(e) = self.poll(&repo).await {
                eprintln!("warning: polling `{}`: {e}", repo.config.name);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// One look at a repository for commits it has not seen.
    pub async fn poll(&self, repo: &Repo) -> Result<(), String> {
        let name = &repo.config.name;
        repo.fetch().await?;
        let now = repo.refs().await?;
        let seen = self.store.seen_refs(name).map_err(|e| e.to_string())?;
        let first = seen.is_empty();
        for (reference, sha) in &now {
            let old = seen.get(reference);
            if old == Some(sha) {
                continue;
            }
            if !first {
                let paths = match old {
                    Some(old) => repo.changed(old, sha).await,
                    None => None,
                };
                let source = Source {
                    paths,
                    ..Source::new(name, TriggerKind::Push, reference, sha)
                };
                self.deliver(&format!("poll:{name}:{reference}:{sha}"), None, &source)
                    .map_err(|e| e.to_string())?;
            }
            self.store
                .set_seen_ref(name, reference, Some(sha))
                .map_err(|e| e.to_string())?;
        }
        for reference in seen.keys().filter(|r| !now.contains_key(*r)) {
            self.store
                .set_seen_ref(name, reference, None)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub(crate) async fn schedule_loop(self: Arc<Server>) {
        loop {
            // Wake just after each minute starts.
            let now = now_ms();
            let next = (now / 60_000 + 1) * 60_000 + 500;
            tokio::time::sleep(Duration::from_millis(next - now)).await;
            self.fire_schedules(now_ms() / 60_000).await;
        }
    }

    /// Queues the runs whose `schedule:` fires at `minute` (minutes since the Unix epoch,
    /// UTC), built from the head of each repository's default branch. The delivery key
    /// names the minute, so a restart within it fires nothing twice.
    pub async fn fire_schedules(&self, minute: u64) {
        let when = Minute::at(minute);
        for repo in &self.repos {
            let name = &repo.config.name;
            let (reference, sha, pipeline) = match self.pipeline_of(repo, "HEAD").await {
                Ok(found) => found,
                Err(e) => {
                    eprintln!("warning: schedules of `{name}`: {e}");
                    continue;
                }
            };
            for cron in &pipeline.on.schedule {
                if !cron.fires(when.minute, when.hour, when.day, when.month, when.weekday) {
                    continue;
                }
                let source = Source {
                    message: format!("schedule `{}`", cron.text),
                    ..Source::new(name, TriggerKind::Schedule, &reference, &sha)
                };
                let key = format!("schedule:{name}:{minute}:{}", cron.text);
                if let Err(e) = self.deliver(&key, None, &source) {
                    eprintln!("error: {e}");
                }
            }
        }
    }

    /// The remote's latest `reference` (a branch, tag, commit or `HEAD`), as a full
    /// reference, its commit and the pipeline there.
    async fn pipeline_of(
        &self,
        repo: &Repo,
        reference: &str,
    ) -> Result<(String, String, ferry_model::Pipeline), String> {
        repo.fetch().await?;
        let (reference, sha) = repo.resolve(reference).await?;
        let text = repo.pipeline_at(&sha).await?;
        let file = PathBuf::from(&repo.config.pipeline);
        Ok((reference, sha, self.executor.parse(&file, &text)?))
    }

    /// Queues a run by hand, of a branch, tag or commit; inputs are checked against the
    /// pipeline's `on.manual.inputs` when it starts.
    pub async fn trigger(
        &self,
        repo: &str,
        reference: &str,
        inputs: std::collections::BTreeMap<String, String>,
    ) -> Result<i64, String> {
        let repo = self.repo(repo).ok_or_else(|| {
            format!(
                "no repository is named `{repo}`; configured: {}",
                self.repos
                    .iter()
                    .map(|r| format!("`{}`", r.config.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let (reference, sha, pipeline) = self.pipeline_of(repo, reference).await?;
        if let Some(manual) = &pipeline.on.manual {
            manual
                .inputs(&inputs)
                .map_err(|problems| problems.join("\n"))?;
        }
        let (message, author) = repo.describe(&sha).await;
        let source = Source {
            message,
            author,
            inputs,
            ..Source::new(&repo.config.name, TriggerKind::Manual, &reference, &sha)
        };
        let id = self
            .store
            .add_run(&source, now_ms())
            .map_err(|e| e.to_string())?;
        self.dispatch.notify_one();
        Ok(id)
    }
}

/// `git.*` for a run from its source, as `ferry run` reads it from the checkout.
fn git_info(source: &Source) -> std::collections::BTreeMap<String, String> {
    let branch = source
        .reference
        .strip_prefix("refs/heads/")
        .map(str::to_string)
        .or_else(|| source.base.clone())
        .unwrap_or_default();
    [
        ("sha", source.sha.clone()),
        ("short-sha", short(&source.sha).to_string()),
        ("ref", source.reference.clone()),
        ("branch", branch),
        ("commit-message", source.message.clone()),
        ("author", source.author.clone()),
        ("event", source.trigger.as_str().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A UTC minute broken into the fields cron reads.
struct Minute {
    minute: u8,
    hour: u8,
    day: u8,
    month: u8,
    weekday: u8,
}

impl Minute {
    fn at(minutes: u64) -> Minute {
        let days = minutes / 1440;
        let of_day = minutes % 1440;
        // Howard Hinnant's days-to-civil, for days since 1970-01-01.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Minute {
            minute: (of_day % 60) as u8,
            hour: (of_day / 60) as u8,
            day: day as u8,
            month: month as u8,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4) % 7) as u8,
        }
    }
}

/// Turns a run's engine events into stored progress and live events.
struct RunReporter {
    run: i64,
    server: Arc<Server>,
    channel: Arc<crate::live::Channel>,
    /// Each job's step keys, to find a step's position from its key.
    steps: Mutex<HashMap<String, Vec<String>>>,
}

impl RunReporter {
    fn save(&self, progress: Progress<'_>) {
        if let Err(e) = self.server.store.progress(self.run, progress) {
            eprintln!("error: run #{}: {e}", self.run);
        }
    }

    /// Rows for jobs the run announced, none started; their step keys are remembered.
    fn pending_rows(&self, jobs: &[ferry_engine::event::JobInfo]) -> Vec<Job> {
        lock(&self.steps).extend(jobs.iter().map(|j| (j.id.clone(), j.keys.clone())));
        jobs.iter()
            .map(|job| Job {
                job: job.id.clone(),
                name: job.name.clone(),
                needs: job.needs.clone(),
                status: "pending".into(),
                duration_ms: None,
                message: None,
                steps: job
                    .keys
                    .iter()
                    .zip(&job.steps)
                    .map(|(key, name)| Step {
                        key: key.clone(),
                        name: name.clone(),
                        status: "pending".into(),
                        duration_ms: None,
                        message: None,
                        cached: false,
                        started_at: None,
                    })
                    .collect(),
            })
            .collect()
    }

    fn index(&self, job: &str, key: &str) -> usize {
        lock(&self.steps)
            .get(job)
            .and_then(|keys| keys.iter().position(|k| k == key))
            .unwrap_or(usize::MAX >> 1)
    }
}

impl Reporter for RunReporter {
    fn event(&self, event: &Event) {
        if let Ok(json) = serde_json::to_string(event) {
            // What a step says (lines, groups, annotations, notices) is as long as the
            // step makes it: the live history may let go of it, never of the run's shape.
            let said = matches!(
                event,
                Event::Log { .. }
                    | Event::GroupStart { .. }
                    | Event::GroupEnd { .. }
                    | Event::Annotation { .. }
                    | Event::Notice { .. }
            );
            self.channel.send(json.into(), said);
        }
        match event {
            Event::RunStarted { run, jobs, .. } => {
                if let Err(e) = self.server.store.set_record(self.run, run) {
                    eprintln!("error: run #{}: {e}", self.run);
                }
                let rows = self.pending_rows(jobs);
                self.save(Progress::Jobs(&rows));
            }
            Event::MatrixExpanded { job, jobs } => {
                let rows = self.pending_rows(jobs);
                self.save(Progress::Expanded { job, jobs: &rows });
            }
            Event::JobStarted { job } => self.save(Progress::Job {
                job,
                status: "running",
                duration_ms: None,
                message: None,
            }),
            Event::JobFinished {
                job,
                status,
                duration_ms,
                message,
                ..
            } => self.save(Progress::Job {
                job,
                status: status.as_str(),
                duration_ms: Some(*duration_ms),
                message: message.as_deref(),
            }),
            Event::StepStarted {
                job,
                step,
                index,
                name,
            } => self.save(Progress::Step {
                job,
                index: *index,
                key: step,
                name,
                status: "running",
                duration_ms: None,
                message: None,
                cached: false,
                started_at: Some(now_ms()),
            }),
            Event::StepFinished {
                job,
                step,
                status,
                message,
                duration_ms,
                cached,
                ..
            } => self.save(Progress::Step {
                job,
                index: self.index(job, step),
                key: step,
                name: "",
                status: status.as_str(),
                duration_ms: Some(*duration_ms),
                message: message.as_deref(),
                cached: cached.is_some(),
                started_at: None,
            }),
            Event::Approval {
                job,
                environment,
                decision,
            } => self.save(Progress::Approval(&crate::store::Approval {
                job: job.to_string(),
                environment: environment.clone(),
                approved: decision.as_ref().map(|d| d.approved),
                by: decision.as_ref().map(|d| d.by.clone()),
                reason: decision.as_ref().and_then(|d| d.reason.clone()),
            })),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Minute;

    #[test]
    fn minutes_become_calendar_fields() {
        // 2026-11-22T21:38Z, a Sunday.
        let m = Minute::at(1_795_383_480 / 60);
        assert_eq!(
            (m.minute, m.hour, m.day, m.month, m.weekday),
            (38, 21, 22, 11, 0)
        );
        // 2024-02-29T00:00Z, a Thursday.
        let m = Minute::at(1_709_164_800 / 60);
        assert_eq!((m.day, m.month, m.weekday), (29, 2, 4));
    }
}
