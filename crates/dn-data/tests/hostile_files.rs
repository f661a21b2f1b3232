//! Files that must not hang or bloat a worker: a corrupted Parquet file ends in a clear error naming the
//! file, at once (4 bytes overwritten at each offset from 4 to 15, and 20 bytes at 12 pseudo-random
//! places; a corrupt reader can otherwise yield errors for ever), and a row with more text than the limit
//! is skipped, named by file and row.

use std::sync::mpsc;
use std::time::Duration;

use dn_data::{Format, load_conversations};

fn variants(good: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for offset in 4..16 {
        let mut bad = good.to_vec();
        bad[offset..offset + 4].copy_from_slice(&[0xff, 0x00, 0x7f, 0x80]);
        out.push((format!("4 bytes at {offset}"), bad));
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..12 {
        let mut bad = good.to_vec();
        for _ in 0..20 {
            let at = (next() % good.len() as u64) as usize;
            bad[at] = next() as u8;
        }
        out.push(("20 random bytes".into(), bad));
    }
    out
}

#[test]
fn corrupted_parquet_files_end_in_a_clear_error_at_once() {
    let good = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rows.parquet"
    ))
    .unwrap();
    let mut errors = 0;
    for (what, bad) in variants(&good) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let result = load_conversations(&bad, Format::Parquet, "rows.parquet");
            let _ = tx.send(
                result
                    .map(|l| l.conversations.len())
                    .map_err(|e| e.to_string()),
            );
        });
        let result = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{what}: still decoding after 30 s"));
        // Some corruptions leave the rows readable (bytes of an unused statistic); the rest are errors
        // naming the file.
        if let Err(e) = result {
            assert!(e.contains("rows.parquet"), "{what}: {e}");
            errors += 1;
        }
    }
    // The corruptions that reach the footer's schema or the first pages (all 4-byte ones) are errors.
    assert!(errors >= 12, "{errors} of 24 variants failed");
}

#[test]
fn a_row_with_more_text_than_the_limit_is_skipped_naming_it() {
    let big = "x".repeat(dn_data::MAX_ROW_BYTES / 2 + 1);
    let rows = format!(
        "{{\"prompt\":\"hi\",\"completion\":\"ok\"}}\n{}\n",
        serde_json::json!({"messages": [
            {"role": "user", "content": big},
            {"role": "assistant", "content": big},
        ]})
    );
    let loaded = load_conversations(rows.as_bytes(), Format::Jsonl, "rows.jsonl").unwrap();
    assert_eq!(loaded.conversations.len(), 1);
    let e = loaded.errors[0].to_string();
    assert!(
        e.contains("rows.jsonl") && e.contains("row 2") && e.contains("bytes"),
        "{e}"
    );
}

/// A preview of the first rows of a large file decodes those rows and stops: the malformed rows after
/// them are never reached (no errors), in JSONL and CSV alike.
#[test]
fn the_first_rows_of_a_file_are_read_without_decoding_the_rest() {
    let good = "{\"prompt\":\"Hi\",\"completion\":\"Hello\"}\n";
    let jsonl = format!("{}{}{}", good, good, "{not json\n".repeat(200_000));
    let loaded =
        dn_data::load_first_conversations(jsonl.as_bytes(), Format::Jsonl, "big.jsonl", 2).unwrap();
    assert_eq!((loaded.conversations.len(), loaded.errors.len()), (2, 0));
    assert_eq!(loaded.rows, vec![1, 2]);
    // A bad row before the limit is reported, and reading goes on to the next good one.
    let mixed = format!("{}{{bad\n{}{}", good, good, "{not json\n".repeat(1000));
    let loaded =
        dn_data::load_first_conversations(mixed.as_bytes(), Format::Jsonl, "m.jsonl", 2).unwrap();
    assert_eq!((loaded.rows.clone(), loaded.errors.len()), (vec![1, 3], 1));
    let csv = format!(
        "prompt,completion\nHi,Hello\nHey,Yo\n{}",
        "a,b,c,d\n".repeat(200_000)
    );
    let loaded =
        dn_data::load_first_conversations(csv.as_bytes(), Format::Csv, "big.csv", 2).unwrap();
    assert_eq!((loaded.conversations.len(), loaded.errors.len()), (2, 0));
    // Without a limit every row is read, and the bad ones reported.
    let all = load_conversations(csv.as_bytes(), Format::Csv, "big.csv").unwrap();
    assert_eq!((all.conversations.len(), all.errors.len()), (2, 200_000));
}
