//! Reading what was pushed to an application's deployment repository, as
//! an operator with access to Clever Cloud's git would (tests check what
//! reaches a job's machine with it).

use super::CleverSim;

impl CleverSim {
    /// The files of the head of `master` in the application's deployment
    /// repository, by path: `None` if the repository is gone (the
    /// application was deleted) or has no `master`.
    pub async fn pushed_files(&self, app_id: &str) -> Option<Vec<(String, Vec<u8>)>> {
        let repo = self.repo_path(app_id);
        let git = |args: &[&str]| {
            let mut command = tokio::process::Command::new("git");
            command
                .arg("--git-dir")
                .arg(&repo)
                .args(args)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .kill_on_drop(true);
            command
        };
        let listing = git(&["ls-tree", "-r", "-z", "--name-only", "refs/heads/master"])
            .output()
            .await
            .ok()?;
        if !listing.status.success() {
            return None;
        }
        let mut files = Vec::new();
        for path in listing.stdout.split(|byte| *byte == 0) {
            if path.is_empty() {
                continue;
            }
            let path = String::from_utf8_lossy(path).into_owned();
            let blob = git(&["cat-file", "blob", &format!("refs/heads/master:{path}")])
                .output()
                .await
                .ok()?;
            if !blob.status.success() {
                return None;
            }
            files.push((path, blob.stdout));
        }
        Some(files)
    }
}
