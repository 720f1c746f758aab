//! The inline SVG plots of the status page: no script, no external asset.

use std::fmt::Write as _;

/// One plotted series.
pub(super) struct Series<'a> {
    pub label: &'a str,
    /// CSS class giving its colour.
    pub class: &'a str,
    pub values: Vec<f64>,
    /// Filled down to zero (drawn in order: later series on top).
    pub area: bool,
}

const PLOT_WIDTH: f64 = 600.0;
const PLOT_HEIGHT: f64 = 160.0;
const PLOT_LEFT: f64 = 44.0;
const PLOT_BOTTOM: f64 = 18.0;
const WIDTH: f64 = PLOT_WIDTH - PLOT_LEFT;
const HEIGHT: f64 = PLOT_HEIGHT - PLOT_BOTTOM;

/// The time window of the plots: the span of the data rounded up to 10 or
/// 30 seconds, or 1, 2, 5, 10 or 15 minutes, at most `max_secs`: from the
/// first seconds on, the data fills the plot.
pub fn plot_window_secs(span_secs: f64, max_secs: f64) -> f64 {
    [10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0]
        .into_iter()
        .find(|window| *window >= span_secs)
        .unwrap_or(max_secs)
        .min(max_secs.max(10.0))
}

/// An inline SVG plot of `series` over the last `window_secs` (times in Unix
/// seconds, the last one drawn at the right edge), with an optional dashed
/// limit line.
pub(super) fn render_plot(
    times: &[f64],
    window_secs: f64,
    series: &[Series<'_>],
    limit: Option<f64>,
) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"plot\" viewBox=\"0 0 {PLOT_WIDTH} {PLOT_HEIGHT}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let Some(&last_time) = times.last() else {
        svg.push_str(
            "<text x=\"50%\" y=\"50%\" text-anchor=\"middle\">no samples yet</text></svg>",
        );
        return svg;
    };
    let data_max = series
        .iter()
        .flat_map(|series| series.values.iter().copied())
        .chain(limit)
        .fold(0.0_f64, f64::max);
    let scale = Scale {
        last_time,
        window_secs,
        y_max: nice_ceiling(data_max * 1.05),
    };
    write_axes(&mut svg, &scale);
    for series in series {
        write_series(&mut svg, &scale, times, series);
    }
    if let Some(limit) = limit {
        let y = scale.y_of(limit);
        let _ = write!(
            svg,
            "<line class=\"limit\" x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_WIDTH}\" y2=\"{y:.1}\">\
             <title>quota {limit:.1}</title></line>"
        );
    }
    svg.push_str("</svg>\n");
    write_legend(&mut svg, series, limit.is_some());
    svg
}

/// Where times and values land in the plot.
struct Scale {
    last_time: f64,
    window_secs: f64,
    y_max: f64,
}

impl Scale {
    fn x_of(&self, time: f64) -> f64 {
        PLOT_LEFT + WIDTH * (1.0 - (self.last_time - time) / self.window_secs).max(0.0)
    }

    fn y_of(&self, value: f64) -> f64 {
        HEIGHT * (1.0 - value / self.y_max)
    }
}

/// Axes, grid and labels.
fn write_axes(svg: &mut String, scale: &Scale) {
    let _ = write!(
        svg,
        "<line class=\"grid\" x1=\"{PLOT_LEFT}\" y1=\"{mid:.1}\" x2=\"{PLOT_WIDTH}\" y2=\"{mid:.1}\"/>\
         <line class=\"axis\" x1=\"{PLOT_LEFT}\" y1=\"{HEIGHT}\" x2=\"{PLOT_WIDTH}\" y2=\"{HEIGHT}\"/>\
         <text x=\"{lx}\" y=\"10\" text-anchor=\"end\">{}</text>\
         <text x=\"{lx}\" y=\"{mid_text:.1}\" text-anchor=\"end\">{}</text>\
         <text x=\"{lx}\" y=\"{HEIGHT}\" text-anchor=\"end\">0</text>\
         <text x=\"{PLOT_LEFT}\" y=\"{PLOT_HEIGHT}\">-{}</text>\
         <text x=\"{PLOT_WIDTH}\" y=\"{PLOT_HEIGHT}\" text-anchor=\"end\">now</text>",
        format_axis(scale.y_max),
        format_axis(scale.y_max / 2.0),
        if scale.window_secs < 60.0 {
            format!("{} s", scale.window_secs.round())
        } else {
            format!("{} min", (scale.window_secs / 60.0).round())
        },
        mid = HEIGHT / 2.0,
        mid_text = HEIGHT / 2.0 + 4.0,
        lx = PLOT_LEFT - 4.0,
    );
}

/// One series: a filled area down to zero, or a line.
fn write_series(svg: &mut String, scale: &Scale, times: &[f64], series: &Series<'_>) {
    let points: Vec<String> = times
        .iter()
        .zip(&series.values)
        .map(|(&time, &value)| format!("{:.1},{:.1}", scale.x_of(time), scale.y_of(value)))
        .collect();
    if series.area {
        let first_time = times.first().copied().unwrap_or(scale.last_time);
        let _ = write!(
            svg,
            "<polygon class=\"area {}\" points=\"{:.1},{HEIGHT} {} {:.1},{HEIGHT}\"><title>{}</title></polygon>",
            series.class,
            scale.x_of(first_time),
            points.join(" "),
            scale.x_of(scale.last_time),
            series.label,
        );
    } else {
        let _ = write!(
            svg,
            "<polyline class=\"line {}\" points=\"{}\"><title>{}</title></polyline>",
            series.class,
            points.join(" "),
            series.label,
        );
    }
}

fn write_legend(svg: &mut String, series: &[Series<'_>], with_limit: bool) {
    svg.push_str("<p class=\"legend\">");
    for series in series {
        let _ = write!(
            svg,
            "<span class=\"key {}\"></span>{} ",
            series.class, series.label
        );
    }
    if with_limit {
        svg.push_str("<span class=\"key limit\"></span>quota");
    }
    svg.push_str("</p>\n");
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `value` (at
/// least 1).
fn nice_ceiling(value: f64) -> f64 {
    if value.is_nan() || value <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn format_axis(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}
