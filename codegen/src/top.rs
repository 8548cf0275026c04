//! `raindrop top`: a live terminal view of a running application's queues and worker pools,
//! read from its job API every `--interval`; `q` (or Esc, or Ctrl-C) quits.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use serde_json::Value;

use crate::client;

/// What one refresh read.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The application's address, for the title.
    pub(crate) url: String,
    /// `GET /v1/queues`.
    pub(crate) queues: Vec<Value>,
    /// `GET /v1/workers`.
    pub(crate) workers: Vec<Value>,
    /// Why the last refresh failed, if it did (the last good figures stay on screen).
    pub(crate) error: Option<String>,
}

impl Snapshot {
    fn refresh(&mut self) {
        let read = |path: &str| client::get_json(&self.url, path);
        match (read("/v1/queues"), read("/v1/workers")) {
            (Ok(Value::Array(queues)), Ok(Value::Array(workers))) => {
                self.queues = queues;
                self.workers = workers;
                self.error = None;
            }
            (Err(e), _) | (_, Err(e)) => self.error = Some(e),
            _ => self.error = Some("the job API answered something other than a list".into()),
        }
    }
}

/// Runs the view until the user quits.
pub(crate) fn run(url: &str, interval: Duration) -> ExitCode {
    let mut snapshot = Snapshot {
        url: url.to_owned(),
        ..Snapshot::default()
    };
    snapshot.refresh();
    let result = ratatui::run(|terminal| -> std::io::Result<()> {
        let mut refreshed = Instant::now();
        loop {
            terminal.draw(|frame| render(frame, &snapshot))?;
            let wait = interval.saturating_sub(refreshed.elapsed());
            if event::poll(wait)? {
                if let Event::Key(key) = event::read()? {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(());
                    }
                }
            } else {
                snapshot.refresh();
                refreshed = Instant::now();
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the terminal failed: {e}");
            ExitCode::from(2)
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Draws `snapshot`: a title, the queues with their counts and last minute, the worker pools.
pub(crate) fn render(frame: &mut Frame<'_>, snapshot: &Snapshot) {
    let [title, queues, workers, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(snapshot.queues.len() as u16 + 3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(Line::from(format!(
            "raindrop top · {} · q quits",
            snapshot.url
        )))
        .style(Style::new().add_modifier(Modifier::BOLD)),
        title,
    );
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let states = ["queued", "scheduled", "running", "retrying", "dead"];
    let rows = snapshot.queues.iter().map(|q| {
        let mut cells = vec![Cell::from(text(&q["name"]))];
        cells.push(Cell::from(if q["paused"] == true { "paused" } else { "" }));
        cells.extend(states.iter().map(|s| Cell::from(text(&q["counts"][*s]))));
        cells.push(Cell::from(text(&q["succeeded_last_minute"])));
        cells.push(Cell::from(text(&q["failed_last_minute"])));
        Row::new(cells)
    });
    let header = Row::new([
        "QUEUE",
        "",
        "QUEUED",
        "SCHEDULED",
        "RUNNING",
        "RETRYING",
        "DEAD",
        "OK/MIN",
        "FAILED/MIN",
    ])
    .style(bold);
    let widths = [
        Constraint::Min(12),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(10),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title("queues")),
        queues,
    );
    let rows = snapshot.workers.iter().map(|w| {
        Row::new([
            text(&w["worker"]),
            text(&w["task"]),
            text(&w["queue"]),
            format!("{}/{}", text(&w["busy"]), text(&w["concurrency"])),
        ])
    });
    let widths = [
        Constraint::Min(20),
        Constraint::Length(16),
        Constraint::Length(16),
        Constraint::Length(10),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(["WORKER", "TASK", "QUEUE", "BUSY"]).style(bold))
            .block(Block::bordered().title("worker pools")),
        workers,
    );
    let line = match &snapshot.error {
        Some(error) => format!("last refresh failed: {error}"),
        None => format!(
            "{} queues, {} worker pools",
            snapshot.queues.len(),
            snapshot.workers.len()
        ),
    };
    frame.render_widget(Paragraph::new(line), status);
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    use super::*;

    fn screen(snapshot: &Snapshot) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(100, 14)).unwrap();
        terminal.draw(|frame| render(frame, snapshot)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn the_view_shows_each_queue_and_pool_on_a_fixed_size_screen() {
        let snapshot = Snapshot {
            url: "http://127.0.0.1:8080".into(),
            queues: vec![json!({
                "name": "job_queue", "paused": true,
                "counts": { "queued": 12, "scheduled": 0, "running": 3, "retrying": 1, "dead": 2 },
                "succeeded_last_minute": 40, "failed_last_minute": 5
            })],
            workers: vec![json!({
                "worker": "host-1:pool-0", "task": "job_worker", "queue": "job_queue",
                "busy": 3, "concurrency": 16
            })],
            error: None,
        };
        let lines = screen(&snapshot);
        assert_eq!(lines[0], "raindrop top · http://127.0.0.1:8080 · q quits");
        let queue = lines
            .iter()
            .find(|l| l.contains("job_queue") && l.contains("paused"));
        let queue = queue.expect("the queue's row");
        let figures: Vec<&str> = queue.split_whitespace().collect();
        assert_eq!(
            figures,
            [
                "│job_queue",
                "paused",
                "12",
                "0",
                "3",
                "1",
                "2",
                "40",
                "5",
                "│"
            ]
        );
        let pool = lines
            .iter()
            .find(|l| l.contains("host-1:pool-0"))
            .expect("the pool's row");
        assert!(
            pool.contains("job_worker") && pool.contains("3/16"),
            "{pool}"
        );
        assert_eq!(lines.last().unwrap(), "1 queues, 1 worker pools");

        let failed = Snapshot {
            error: Some("cannot reach http://127.0.0.1:8080".into()),
            ..snapshot
        };
        let lines = screen(&failed);
        assert!(
            lines.iter().any(|l| l.contains("job_queue")),
            "the last figures stay"
        );
        assert_eq!(
            lines.last().unwrap(),
            "last refresh failed: cannot reach http://127.0.0.1:8080"
        );
    }
}
