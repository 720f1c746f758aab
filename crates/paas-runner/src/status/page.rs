//! The HTML status page: the header, the replica's role, the quota bar, jobs by stage, the
//! plots, the runners and the tracked jobs, each written by its own
//! function into one string.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::plot::{plot_window_secs, render_plot, Series};
use super::{held_back, stage_counts, stage_meaning, History, Sample, StatusConfig, PAGE_JOB_ROWS};
use crate::snapshot::{ReplicaStatus, Snapshot, ROLE_ACTIVE, ROLE_STANDBY};

/// The HTML status page: self-contained, refreshed every 2 s by a few lines
/// of script (a meta refresh without script).
pub fn render_page(snapshot: &Snapshot, history: &History, config: &StatusConfig) -> String {
    let mut html = String::with_capacity(16 * 1024);
    html.push_str(PAGE_HEAD);
    write_header(&mut html, config);
    if let Some(replica) = config.replica.borrow().as_ref() {
        write_replica(&mut html, replica, SystemTime::now());
    }
    if snapshot.shutting_down {
        html.push_str(
            "<p class=\"banner\">Shutting down: no job is acquired any more; \
             in-flight operations complete.</p>\n",
        );
    }
    write_quota(&mut html, snapshot);
    write_stages(&mut html, snapshot, history);
    write_plots(&mut html, snapshot, history, config);
    write_runners(&mut html, snapshot);
    write_jobs(&mut html, snapshot);
    html.push_str(
        "</section>\n<footer><a href=\"metrics\">metrics</a> &middot; <a href=\"status.json\">status.json</a> \
         &middot; <a href=\"history.json\">history.json</a></footer>\n</main>\n",
    );
    html.push_str(PAGE_TAIL);
    html
}

/// Version, system id and start time; opens `<main>`.
fn write_header(html: &mut String, config: &StatusConfig) {
    let _ = write!(
        html,
        "<header><h1>paas-runner</h1><span>version {} &middot; system {} &middot; started {} UTC</span>\
         <span id=\"conn\"></span></header>\n<main id=\"main\">\n",
        escape_html(&config.version),
        escape_html(&config.system_id),
        format_utc(config.started_at),
    );
}

/// This process's role among replicas: one line, or a banner on a
/// standby (whose page has no jobs to show).
fn write_replica(html: &mut String, replica: &ReplicaStatus, now: SystemTime) {
    let since = |at: Option<SystemTime>| match at {
        Some(at) => format!(
            "since {} UTC ({} ago)",
            format_utc(at),
            format_age(now.duration_since(at).unwrap_or_default())
        ),
        None => "since an unknown time".to_owned(),
    };
    let me = escape_html(&replica.replica);
    let epoch = replica.epoch.unwrap_or(0);
    match replica.role {
        ROLE_STANDBY => {
            let lease = match replica.lease_expires_at.map(|at| at.duration_since(now)) {
                Some(Ok(left)) => {
                    format!(", its lease expires in {} unless renewed", format_age(left))
                }
                Some(Err(past)) => format!(
                    ", its lease expired {} ago: a standby takes over at its next attempt",
                    format_age(past.duration())
                ),
                None => String::new(),
            };
            let active = match &replica.active {
                Some(active) => format!(
                    "the active replica is <code>{}</code> (lease epoch {epoch}, active {}{lease})",
                    escape_html(active),
                    since(replica.active_since)
                ),
                None => format!(
                    "no replica holds the lease now (epoch {epoch}): a standby takes it at \
                     its next attempt"
                ),
            };
            let _ = writeln!(
                html,
                "<p class=\"banner\" id=\"replica\">Standby: this replica (<code>{me}</code>) \
                 waits for the lease; {active}. The jobs and figures are on the active \
                 replica's page; this one shows them once it takes over.</p>"
            );
        }
        ROLE_ACTIVE => {
            let _ = writeln!(
                html,
                "<p class=\"figures\" id=\"replica\">Role: <b>active</b> replica \
                 <code>{me}</code> &middot; lease epoch {epoch} &middot; active {}</p>",
                since(replica.active_since)
            );
        }
        role => {
            let _ = writeln!(
                html,
                "<p class=\"figures\" id=\"replica\">Role: <b>{}</b> (SQLite store: this \
                 process owns the state database through its lock; no lease, no standby) \
                 &middot; <code>{me}</code> &middot; {}</p>",
                escape_html(role),
                since(replica.active_since)
            );
        }
    }
}

/// `45 s`, `12 min`, `3 h 05 min`, `2 d 4 h`.
fn format_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// The quota bar (used, reserved, free), the runners held back and the
/// applications of other installations.
fn write_quota(html: &mut String, snapshot: &Snapshot) {
    let stats = &snapshot.stats;
    let free = (stats.quota - stats.weight - stats.reserved_weight).max(0.0);
    let _ = writeln!(
        html,
        "<section><h2>Quota</h2><p class=\"figures\">\
         <span class=\"used\">used {:.1}</span> &middot; <span class=\"reserved\">reserved {:.1}</span> \
         &middot; <span class=\"free\">free {:.1}</span> &middot; quota {:.1}</p>",
        stats.weight, stats.reserved_weight, free, stats.quota
    );
    let (used_pct, reserved_pct) = if stats.quota > 0.0 {
        let used = (stats.weight / stats.quota * 100.0).clamp(0.0, 100.0);
        let reserved = (stats.reserved_weight / stats.quota * 100.0).clamp(0.0, 100.0 - used);
        (used, reserved)
    } else {
        (0.0, 0.0)
    };
    let _ = writeln!(
        html,
        "<div class=\"bar\" title=\"used {used_pct:.0}%, reserved {reserved_pct:.0}%\">\
         <div class=\"used\" style=\"width:{used_pct:.2}%\"></div>\
         <div class=\"reserved\" style=\"width:{reserved_pct:.2}%\"></div></div>"
    );
    write_held_back(html, snapshot);
    if stats.foreign_apps > 0 {
        let _ = writeln!(
            html,
            "<p class=\"figures bad\" id=\"foreign\">{} application(s) of another installation \
             (or unmarked) under this runner's key: weight {:.1} counted in the quota, never \
             deleted by this service (<code>paas-runner state</code> lists them)</p>",
            stats.foreign_apps, stats.foreign_weight
        );
    }
    html.push_str("</section>\n");
}

/// The runners whose job requests a limit holds back, if any.
fn write_held_back(html: &mut String, snapshot: &Snapshot) {
    let held = held_back(snapshot);
    if held.is_empty() {
        return;
    }
    html.push_str("<p class=\"figures\" id=\"held\">Job requests held back: ");
    let parts: Vec<String> = held
        .iter()
        .map(|(runner, hold)| {
            format!(
                "<b>{}</b> by {}",
                escape_html(runner),
                escape_html(&hold.to_string())
            )
        })
        .collect();
    html.push_str(&parts.join(" &middot; "));
    html.push_str("</p>\n");
}

/// One tile per stage, then the totals (with the failures of the history's
/// window).
fn write_stages(html: &mut String, snapshot: &Snapshot, history: &History) {
    let stats = &snapshot.stats;
    html.push_str("<section><h2>Jobs</h2><div class=\"tiles\">\n");
    for (stage, count) in stage_counts(snapshot) {
        let class = if stage == "failing" && count > 0 {
            "tile alert"
        } else {
            "tile"
        };
        let _ = writeln!(
            html,
            "<div class=\"{class}\" title=\"{}\"><b>{count}</b>{stage}</div>",
            stage_meaning(stage)
        );
    }
    let (failed_recently, window_minutes) =
        match (history.samples().next(), history.samples().last()) {
            (Some(first), Some(last)) => (
                last.failed_total.saturating_sub(first.failed_total),
                ((last.time_secs - first.time_secs) / 60.0).ceil().max(1.0),
            ),
            _ => (0, 1.0),
        };
    let _ = writeln!(
        html,
        "</div><p class=\"figures\">{} tracked &middot; {} polls in flight &middot; \
         totals: {} acquired, {} launched, {} done, <span class=\"{}\">{} failed</span> \
         ({failed_recently} in the last {window_minutes} min)</p></section>",
        stats.jobs,
        stats.polls_in_flight,
        stats.acquired_total,
        stats.launched_total,
        stats.done_total,
        if stats.failed_total > 0 { "bad" } else { "" },
        stats.failed_total,
    );
}

/// The weight and jobs plots, over a window that fits the data (a minute
/// at first, up to the whole history).
fn write_plots(html: &mut String, snapshot: &Snapshot, history: &History, config: &StatusConfig) {
    let samples: Vec<&Sample> = history.samples().collect();
    let times: Vec<f64> = samples.iter().map(|sample| sample.time_secs).collect();
    let window_secs = plot_window_secs(
        times
            .last()
            .zip(times.first())
            .map_or(0.0, |(last, first)| last - first),
        config.sample_period.as_secs_f64() * history.capacity() as f64,
    );
    let quota = samples
        .last()
        .map_or(snapshot.stats.quota, |sample| sample.quota);
    let series = |label, class, area, value: fn(&Sample) -> f64| Series {
        label,
        class,
        values: samples.iter().map(|sample| value(sample)).collect(),
        area,
    };
    html.push_str("<section class=\"plots\"><div><h2>Weight</h2>\n");
    html.push_str(&render_plot(
        &times,
        window_secs,
        &[
            series("used + reserved", "reserved", true, |sample| {
                sample.weight_used + sample.weight_reserved
            }),
            series("used", "used", true, |sample| sample.weight_used),
        ],
        Some(quota),
    ));
    html.push_str("</div><div><h2>Jobs</h2>\n");
    html.push_str(&render_plot(
        &times,
        window_secs,
        &[
            series("tracked", "total", false, |sample| sample.jobs as f64),
            series("running", "used", false, |sample| sample.running as f64),
            series("starting", "reserved", false, |sample| {
                sample.starting as f64
            }),
            series("failing", "bad", false, |sample| sample.failing as f64),
        ],
        None,
    ));
    html.push_str("</div></section>\n");
}

/// The runners' table, with each one's share of the quota.
fn write_runners(html: &mut String, snapshot: &Snapshot) {
    let quota = snapshot.stats.quota;
    html.push_str(
        "<section><h2>Runners</h2><table><tr><th>runner</th><th>key</th><th>jobs</th>\
         <th>weight</th><th>share of quota</th><th>max job weight</th><th>max fraction</th></tr>\n",
    );
    for runner in &snapshot.runners {
        let share = if quota > 0.0 {
            (runner.weight / quota * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        };
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{:.1}</td>\
             <td><div class=\"bar small\"><div class=\"used\" style=\"width:{share:.2}%\"></div></div></td>\
             <td>{:.1}</td><td>{}</td></tr>",
            escape_html(&runner.name),
            escape_html(&runner.key),
            runner.jobs,
            runner.weight,
            runner.max_job_weight,
            runner.quota_max_fraction,
        );
    }
    html.push_str("</table></section>\n");
}

/// The tracked jobs' table (at most [`PAGE_JOB_ROWS`] rows); leaves its
/// section open for the footer.
fn write_jobs(html: &mut String, snapshot: &Snapshot) {
    let _ = writeln!(
        html,
        "<section><h2>Tracked jobs ({})</h2><table><tr><th>runner</th><th>job</th><th>stage</th>\
         <th>flavor</th><th>weight</th><th>application</th></tr>",
        snapshot.jobs.len()
    );
    for job in snapshot.jobs.iter().take(PAGE_JOB_ROWS) {
        let _ = writeln!(
            html,
            "<tr class=\"{stage}\"><td>{}</td><td>{}</td><td>{stage}</td><td>{}</td><td>{:.1}</td><td><code>{}</code></td></tr>",
            escape_html(&job.runner),
            job.job_id,
            escape_html(&job.flavor),
            job.weight,
            escape_html(job.app_id.as_deref().unwrap_or("-")),
            stage = escape_html(job.stage),
        );
    }
    html.push_str("</table>\n");
    if snapshot.jobs.len() > PAGE_JOB_ROWS {
        let _ = writeln!(
            html,
            "<p>&hellip; and {} more in <a href=\"status.json\">status.json</a>.</p>",
            snapshot.jobs.len() - PAGE_JOB_ROWS
        );
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (civil-from-days, Howard Hinnant's algorithm).
pub(super) fn format_utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const PAGE_HEAD: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>paas-runner status</title>
<noscript><meta http-equiv="refresh" content="2"></noscript>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1280px;padding:0 16px;color:#222;background:#fafafa}
header{display:flex;gap:16px;align-items:baseline;flex-wrap:wrap;border-bottom:1px solid #ddd}
header h1{font-size:20px;margin:8px 0}header span{color:#666}#conn{color:#b00020;font-weight:bold}
h2{font-size:15px;margin:16px 0 6px}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:8px;font-weight:bold}
.figures{margin:4px 0}.used{color:#1b7f3b}.reserved{color:#a86b00}.free{color:#666}.bad{color:#b00020;font-weight:bold}
.bar{display:flex;height:22px;background:#e4e4e4;border-radius:3px;overflow:hidden;max-width:900px}
.bar.small{height:10px;width:120px}.bar .used{background:#2e9e55}.bar .reserved{background:#f0b030}
.tiles{display:flex;gap:8px;flex-wrap:wrap}
.tile{background:#fff;border:1px solid #ddd;border-radius:4px;padding:6px 12px;min-width:90px;color:#555}
.tile b{display:block;font-size:22px;color:#222}.tile.alert{border-color:#b00020}.tile.alert b{color:#b00020}
.plots{display:flex;gap:24px;flex-wrap:wrap}.plots>div{flex:1;min-width:320px}
svg.plot{width:100%;height:auto;background:#fff;border:1px solid #ddd}
svg text{font-size:10px;fill:#666}.axis{stroke:#999}.grid{stroke:#eee}
.limit{stroke:#b00020;stroke-dasharray:5 4;stroke-width:1.5}
.area{stroke:none}.area.used{fill:#2e9e55;opacity:.8}.area.reserved{fill:#f0b030;opacity:.8}
.line{fill:none;stroke-width:1.5}.line.total{stroke:#333}.line.used{stroke:#2e9e55}.line.reserved{stroke:#e09a10}.line.bad{stroke:#b00020}
.legend{margin:2px 0;color:#555}.key{display:inline-block;width:12px;height:4px;margin:0 4px 2px 8px;vertical-align:middle}
.key.total{background:#333}.key.used{background:#2e9e55}.key.reserved{background:#f0b030}.key.bad{background:#b00020}
.key.limit{background:repeating-linear-gradient(90deg,#b00020 0 5px,transparent 5px 9px)}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f0f0f0}tr.failing td{color:#b00020}footer{margin:24px 0;color:#666}
</style></head><body>
"#;

const PAGE_TAIL: &str = r#"<script>
setInterval(function () {
  fetch(location.href, {cache: "no-store"})
    .then(function (response) { if (!response.ok) throw response.status; return response.text(); })
    .then(function (text) {
      var next = new DOMParser().parseFromString(text, "text/html").getElementById("main");
      document.getElementById("main").replaceWith(next);
      document.getElementById("conn").textContent = "";
    })
    .catch(function () { document.getElementById("conn").textContent = "not updated: the service does not answer"; });
}, 2000);
</script>
</body></html>
"#;
