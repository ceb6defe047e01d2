//! Per-run logs: bounded per run (oldest dropped), filtered by level, kind, attempt
//! and limit, kept apart per run and across a reopen.

use crate::Site;
use sluice_store::log::RunId;
use sluice_store::run_logs::{LogEntry, LogFilter, MAX_ENTRIES_PER_RUN, RequestEntry};

fn line(i: usize, level: &str, attempt: u32) -> LogEntry {
    LogEntry {
        at_unix_ms: i as i64,
        attempt,
        stream: Some(
            if i.is_multiple_of(3) {
                "users"
            } else {
                "orders"
            }
            .into(),
        ),
        level: level.into(),
        context: "source.next".into(),
        message: format!("line {i}"),
        request: None,
    }
}

pub async fn logs_are_bounded_per_run_and_filtered(site: &dyn Site) {
    let (a, b) = (RunId::v7(1, [1; 10]), RunId::v7(2, [2; 10]));
    {
        let store = site.open().await;
        let logs = store.run_logs();
        let first: Vec<_> = (0..MAX_ENTRIES_PER_RUN)
            .map(|i| line(i, "info", 1))
            .collect();
        logs.append(a, &first).await.unwrap();
        let more: Vec<_> = (MAX_ENTRIES_PER_RUN..MAX_ENTRIES_PER_RUN + 10)
            .map(|i| line(i, if i % 2 == 0 { "warn" } else { "debug" }, 2))
            .collect();
        logs.append(a, &more).await.unwrap();
        let mut request = line(0, "warn", 1);
        request.request = Some(RequestEntry {
            method: "GET".into(),
            host: "h".into(),
            path: "/p".into(),
            status: Some(503),
            latency_ms: 3,
            waited_ms: 0,
            bytes_sent: 0,
            bytes_received: 10,
            error: None,
        });
        logs.append(b, &[request]).await.unwrap();
    }
    let store = site.open().await;
    let logs = store.run_logs();
    let all = logs.read(a, &LogFilter::default()).await.unwrap();
    assert_eq!(all.len(), MAX_ENTRIES_PER_RUN);
    assert_eq!(all[0].message, "line 10");
    assert_eq!(
        all.last().unwrap().message,
        format!("line {}", MAX_ENTRIES_PER_RUN + 9)
    );

    let warn = LogFilter {
        min_level: Some("warn".into()),
        ..LogFilter::default()
    };
    assert_eq!(logs.read(a, &warn).await.unwrap().len(), 5);
    let second = LogFilter {
        attempt: Some(2),
        limit: 3,
        ..LogFilter::default()
    };
    let newest = logs.read(a, &second).await.unwrap();
    assert_eq!(newest.len(), 3);
    assert_eq!(
        newest[2].message,
        format!("line {}", MAX_ENTRIES_PER_RUN + 9)
    );
    let users = LogFilter {
        stream: Some("users".into()),
        ..LogFilter::default()
    };
    let of_users = logs.read(a, &users).await.unwrap();
    assert_eq!(
        of_users.len(),
        all.iter()
            .filter(|e| e.stream.as_deref() == Some("users"))
            .count()
    );
    assert!(!of_users.is_empty() && of_users.len() < all.len());
    let requests = LogFilter {
        requests: Some(true),
        ..LogFilter::default()
    };
    assert!(logs.read(a, &requests).await.unwrap().is_empty());
    let of_b = logs.read(b, &requests).await.unwrap();
    assert_eq!(of_b.len(), 1);
    assert_eq!(of_b[0].request.as_ref().unwrap().status, Some(503));
}
