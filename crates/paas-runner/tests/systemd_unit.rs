//! The sample unit `contrib/paas-runner.service`: the directives the
//! service relies on are there, and `systemd-analyze verify` accepts it
//! (with `ExecStart` pointed at the built binary) where systemd is
//! installed.

use std::path::Path;

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/paas-runner.service");
    std::fs::read_to_string(path).expect("contrib/paas-runner.service")
}

#[test]
fn the_unit_says_what_the_service_does() {
    let unit = unit_text();
    for directive in [
        "Type=notify",
        "KillSignal=SIGQUIT",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "StateDirectory=paas-runner",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "User=paas-runner",
        "RestartPreventExitStatus=2",
    ] {
        assert!(
            unit.lines().any(|line| line.starts_with(directive)),
            "missing {directive}"
        );
    }
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    let available = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !available {
        eprintln!("systemd-analyze not installed: only the directives were checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_text().replace(
        "/usr/local/bin/paas-runner",
        env!("CARGO_BIN_EXE_paas-runner"),
    );
    let path = dir.path().join("paas-runner.service");
    std::fs::write(&path, unit).unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Outside a booted systemd, verify still checks the unit's syntax and
    // its executables; lines about the missing bus are not about the unit.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("paas-runner.service"))
        .collect();
    assert!(complaints.is_empty(), "{stderr}");
}
