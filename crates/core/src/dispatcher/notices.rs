//! The slow-launch notice written into the log of a job slow to start.

use super::*;

impl Dispatcher {
    pub(super) fn schedule_notice(&mut self, key: JobKey, now: Instant) {
        if !self.config.slow_notice_after.is_zero() {
            self.notice_wakeups
                .insert((now + self.config.slow_notice_after, key));
        }
    }

    /// Sends the slow-launch notices that are due.
    pub(super) fn send_notices(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.notice_wakeups.iter().next() {
            if at > now {
                break;
            }
            self.notice_wakeups.remove(&(at, key));
            if self.shutting_down {
                continue;
            }
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            if job.slow_notice_sent || job.notice_busy || job.failed || !job.stage.is_provisioning()
            {
                continue;
            }
            if !job.confirmed {
                // Nothing may be written before the confirmation.
                self.notice_wakeups
                    .insert((now + Duration::from_secs(1), key));
                continue;
            }
            let spec = &self.runners[key.runner].spec;
            let waited = now.saturating_duration_since(job.acquired_at);
            let text = messages::yellow_lines(&messages::slow_launch(
                spec.flavors.get(&job.flavor),
                &spec.zone,
                waited.as_secs(),
                spec.launch_watch.map(|watch| watch.timeout.as_secs()),
            ));
            job.notice_busy = true;
            let command = Command::AppendNotice {
                job: key,
                token: job.token.clone(),
                text,
            };
            self.commands.push_back(command);
        }
    }

    /// Outcome of a slow-launch notice: the log's length after it, if it
    /// was written (a notice is not retried).
    pub fn handle_notice_written(&mut self, key: JobKey, log_length: Option<u64>, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.notice_busy = false;
        job.slow_notice_sent = true;
        if let Some(length) = log_length {
            // Only bytes written before the inner runner's count as ours:
            // the log is still ours alone while the job is not launched.
            if job.stage.is_provisioning() {
                job.log_bytes = job.log_bytes.max(length);
            }
        }
        self.save(key);
        self.drive(now);
    }
}
