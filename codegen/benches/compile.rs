//! Parse + validate + normalize of a generated manifest with 1,000 blocks.
//!
//! Run with `cargo bench -p raindrop-codegen --bench compile`; prints the figures. The target is
//! under 50 ms per compile in release.

use std::time::{Duration, Instant};

use raindrop_codegen::{SourceFile, compile};

/// A manifest with `blocks` blocks: queues with workers and settings, monitors, caches, envs.
fn manifest(blocks: usize) -> String {
    let groups = blocks / 4;
    let mut text = String::from(
        "application \"bench\" {\n  service \"api\" {\n    status_cache = \"cache-0\"\n  }\n",
    );
    for i in 0..groups {
        text.push_str(&format!(
            "  queue \"queue-{i}\" {{\n    max_attempts = 5\n    backoff {{\n      initial = \"1s\"\n      max = \"5m\"\n    }}\n  }}\n"
        ));
        text.push_str(&format!("  task \"worker-{i}\" {{\n    queue = \"queue-{i}\"\n    concurrency = 4\n    timeout = \"30s\"\n  }}\n"));
        text.push_str(&format!(
            "  kv_cache \"cache-{i}\" {{\n    ttl = \"1h\"\n  }}\n"
        ));
        text.push_str(&format!(
            "  observer \"monitor-{i}\" {{\n    queues = [\"queue-{i}\"]\n    alert \"backlog\" {{\n      metric = \"queue_depth\"\n      threshold = 100\n    }}\n  }}\n"
        ));
    }
    text.push_str("}\n");
    text
}

fn main() {
    let blocks = 1_000;
    let source = SourceFile::new("bench.manifest", manifest(blocks));
    let compiled = compile(&source);
    assert!(
        !compiled.has_errors(),
        "{}",
        compiled.render(&source, raindrop_codegen::Style::Plain)
    );

    let runs = 50;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let compiled = compile(&source);
            let elapsed = start.elapsed();
            std::hint::black_box(compiled);
            elapsed
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "compile {blocks} blocks ({} lines, {} KiB): min {:.2} ms, median {:.2} ms, p90 {:.2} ms, max {:.2} ms over {runs} runs",
        source.text().lines().count(),
        source.text().len() / 1024,
        ms(times[0]),
        ms(times[runs / 2]),
        ms(times[runs * 9 / 10]),
        ms(times[runs - 1]),
    );
}
