//! The `origin eval` / `origin split` commands, run as a user would run them.

use std::path::Path;
use std::process::Command;

fn origin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(args)
        .output()
        .expect("origin runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("origin-eval-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn eval_json_has_the_documented_keys_for_every_model() {
    let dir = temp_dir("keys");
    // Two taste groups: users 1-3 like items 10-13, users 4-6 like items 20-23.
    let train = write(
        &dir,
        "train.txt",
        "1 10 11 12\n2 10 11 13\n3 11 12 13\n4 20 21 22\n5 20 21 23\n6 21 22 23\n",
    );
    let valid = write(&dir, "valid.txt", "1 13\n4 23\n");
    let test = write(&dir, "test.txt", "2 12\n5 22\n6 20 99\n");
    for model in [
        "popularity",
        "itemknn",
        "userknn",
        "ease",
        "dlae",
        "rp3beta",
        "gfcf",
        "als",
        "hybrid",
        "auto",
    ] {
        let out = origin(&[
            "eval", "--format", "lists", "--train", &train, "--valid", &valid, "--test", &test,
            "--k", "2", "--model", model, "--json",
        ]);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        for key in [
            "recall@2",
            "ndcg@2",
            "precision@2",
            "map@2",
            "coverage",
            "model",
            "params",
            "seconds",
        ] {
            assert!(v.get(key).is_some(), "{model}: missing {key} in {v}");
        }
        // item 99 is not in the training catalogue: counted, not silently dropped.
        let unknown: u64 = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["unknown_items"].as_u64().unwrap())
            .sum();
        assert_eq!(unknown, 1, "{model}");
        assert_eq!(v["unknown_test_items"]["pairs"], 1, "{model}");
        assert_eq!(
            v["unknown_test_items"]["counted_as_misses"], true,
            "{model}"
        );
        assert!(v["by_activity"].as_array().is_some_and(|b| !b.is_empty()));
        if model != "popularity" {
            // the groups are separable: every collaborative model finds the held-out item;
            // user 6's unknown item 99 is a miss no model can avoid: recall (1 + 1 + ½)/3.
            let recall = v["recall@2"].as_f64().unwrap();
            assert!((recall - 2.5 / 3.0).abs() < 1e-9, "{model}: {v}");
        }
    }
    // --drop-unknown-items leaves item 99 out of user 6's relevant set, and says so.
    let out = origin(&[
        "eval",
        "--format",
        "lists",
        "--train",
        &train,
        "--test",
        &test,
        "--k",
        "2",
        "--model",
        "ease",
        "--json",
        "--drop-unknown-items",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["recall@2"].as_f64().unwrap(), 1.0, "{v}");
    assert_eq!(v["unknown_test_items"]["counted_as_misses"], false);
    assert_eq!(v["unknown_test_items"]["pairs"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_malformed_line_fails_with_file_and_line() {
    let dir = temp_dir("bad");
    let train = write(&dir, "train.csv", "user,item\n1,10\n1,ten\n");
    let out = origin(&[
        "eval", "--format", "csv", "--train", &train, "--test", &train, "--model", "ease",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{train}:3: item id \"ten\"")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn split_is_reproducible_for_a_seed() {
    let dir = temp_dir("split");
    let data: String = (1..=5)
        .flat_map(|u| (1..=20).map(move |i| format!("{u}\t{i}\t4\t{}\n", 880_000_000 + i)))
        .collect();
    let input = write(&dir, "u.data", &data);
    let run = |out: &str| {
        let o = origin(&["split", "--input", &input, "--out-dir", out, "--seed", "7"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        ["train.txt", "valid.txt", "test.txt"]
            .map(|f| std::fs::read_to_string(Path::new(out).join(f)).unwrap())
    };
    let a = run(&dir.join("a").display().to_string());
    let b = run(&dir.join("b").display().to_string());
    assert_eq!(a, b);
    // 20 items per user → 16 / 2 / 2.
    assert_eq!(a[2].lines().next().unwrap().split_whitespace().count(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
