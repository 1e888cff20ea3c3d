use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    id: String,
    addr: u32,
}

impl Record for Rec {
    fn key(&self) -> RecordKey {
        RecordKey {
            container_id: self.id.clone(),
            ifname: "eth0".into(),
        }
    }
}

fn rec(id: &str, addr: u32) -> Rec {
    Rec {
        id: id.into(),
        addr,
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vpc-cni-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn sorted(mut v: Vec<Rec>) -> Vec<Rec> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_changes_survive_a_restart() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    assert!(store.load().records.is_none(), "nothing yet: a first start");
    store.start(vec![rec("a", 1)]).unwrap();
    store.put(rec("b", 2)).durable().await.unwrap();
    store.put(rec("c", 3)).durable().await.unwrap();
    store.del(rec("a", 1).key()).durable().await.unwrap();
    // A second process reads what the first made durable.
    let again = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    let loaded = again.load();
    assert_eq!(loaded.version, Some(CURRENT_VERSION));
    assert_eq!(loaded.journal_ops, 3);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(
        sorted(loaded.records.unwrap()),
        vec![rec("b", 2), rec("c", 3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_changes_ride_with_the_next_durable_one_in_order() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    store.load();
    store.start(Vec::new()).unwrap();
    let first = store.put(rec("a", 1));
    store.put_lazy(rec("a", 10));
    store.put(rec("b", 2)).durable().await.unwrap();
    first.durable().await.unwrap();
    let loaded = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap().load();
    assert_eq!(loaded.journal_ops, 3);
    assert_eq!(
        sorted(loaded.records.unwrap()),
        vec![rec("a", 10), rec("b", 2)],
        "the lazy change is applied after the durable one it follows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_change_alone_reaches_the_disk_by_itself() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    store.load();
    store.start(Vec::new()).unwrap();
    store.put(rec("a", 1)).durable().await.unwrap();
    store.put_lazy(rec("a", 10));
    // Liveness, not speed: it is written within two LAZY_FLUSH; give it ample time.
    let deadline = std::time::Instant::now() + LAZY_FLUSH * 20;
    loop {
        let loaded = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap().load();
        if loaded.records.unwrap_or_default() == vec![rec("a", 10)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a lazy change was never written"
        );
        tokio::time::sleep(LAZY_FLUSH / 4).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_fsyncs() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    store.load();
    store.start(Vec::new()).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.put(rec(&format!("p{i:03}"), i)).durable().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let loaded = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap().load();
    assert_eq!(loaded.records.unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_everything() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    store.load();
    store.start(Vec::new()).unwrap();
    for i in 0..(COMPACT_MIN_OPS as u32 + 10) {
        store
            .put(rec(&format!("p{}", i % 50), i))
            .durable()
            .await
            .unwrap();
    }
    let loaded = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap().load();
    let records = loaded.records.unwrap();
    assert_eq!(records.len(), 50);
    assert!(
        loaded.journal_ops < COMPACT_MIN_OPS,
        "compacted: {}",
        loaded.journal_ops
    );
    // Only the current journal is left.
    let journals: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal-"))
        .collect();
    assert_eq!(journals.len(), 1);
}

#[test]
fn a_torn_last_line_is_dropped_quietly() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    write_atomically(
        &dir.0,
        CHECKPOINT_FILE,
        br#"{"version":2,"generation":3,"allocations":[{"id":"a","addr":1}]}"#,
    )
    .unwrap();
    fs::write(
        dir.0.join(journal_name(3)),
        b"{\"op\":\"put\",\"record\":{\"id\":\"b\",\"addr\":2}}\n{\"op\":\"put\",\"rec\0\0\0",
    )
    .unwrap();
    let loaded = store.load();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(
        sorted(loaded.records.unwrap()),
        vec![rec("a", 1), rec("b", 2)]
    );
}

#[test]
fn damage_in_the_middle_is_reported_and_set_aside() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    write_atomically(
        &dir.0,
        CHECKPOINT_FILE,
        br#"{"version":2,"generation":1,"allocations":[]}"#,
    )
    .unwrap();
    fs::write(
        dir.0.join(journal_name(1)),
        b"{\"op\":\"put\",\"record\":{\"id\":\"a\",\"addr\":1}}\nGARBAGE\n{\"op\":\"put\",\"record\":{\"id\":\"b\",\"addr\":2}}\n",
    )
    .unwrap();
    let loaded = store.load();
    assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
    assert!(
        loaded.problems[0].contains("line 2"),
        "{:?}",
        loaded.problems
    );
    assert_eq!(loaded.records.unwrap(), vec![rec("a", 1)]);
    assert!(dir.0.join("journal-1.log.unreadable").exists());
}

#[test]
fn a_garbage_snapshot_is_reported_and_set_aside() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    fs::write(
        dir.0.join(CHECKPOINT_FILE),
        b"{\"version\": 2, \"allocations\": [1, 2",
    )
    .unwrap();
    let loaded = store.load();
    assert_eq!(
        loaded.records,
        Some(Vec::new()),
        "damaged, not a first start"
    );
    assert_eq!(loaded.problems.len(), 1);
    assert!(dir.0.join("checkpoint.json.unreadable").exists());
}

#[test]
fn the_previous_format_is_read() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    write_atomically(
        &dir.0,
        CHECKPOINT_FILE,
        br#"{"version":1,"allocations":[{"id":"a","addr":1},{"id":"b","addr":2}]}"#,
    )
    .unwrap();
    let loaded = store.load();
    assert_eq!(loaded.version, Some(1));
    assert_eq!(
        sorted(loaded.records.unwrap()),
        vec![rec("a", 1), rec("b", 2)]
    );
    // The next start writes the current format.
    store.start(vec![rec("a", 1)]).unwrap();
    let text = fs::read_to_string(dir.0.join(CHECKPOINT_FILE)).unwrap();
    assert!(text.contains("\"version\": 2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_durability_answers_at_once_and_still_writes() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Async).unwrap();
    store.load();
    store.start(Vec::new()).unwrap();
    store.put(rec("a", 1)).durable().await.unwrap();
    let written = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        Store::<Rec>::open(&dir.0, Durability::Sync)
            .unwrap()
            .load()
            .records
            .is_some_and(|r| r == vec![rec("a", 1)])
    });
    assert!(written);
}

#[test]
fn atomic_write_replaces_the_file() {
    let dir = TempDir::new();
    fs::create_dir_all(&dir.0).unwrap();
    write_atomically(&dir.0, "c.json", b"one").unwrap();
    write_atomically(&dir.0, "c.json", b"two").unwrap();
    assert_eq!(fs::read(dir.0.join("c.json")).unwrap(), b"two");
    assert!(!dir.0.join(".c.json.tmp").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_grows_past_its_zeroed_space() {
    let dir = TempDir::new();
    let store = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap();
    store.load();
    store.start(Vec::new()).unwrap();
    let big = "x".repeat(4096);
    // 600 lines of > 4 KiB: past the first zeroed chunk, before compaction.
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let s = store.clone();
            let id = format!("{big}{i:04}");
            tokio::spawn(async move { s.put(rec(&id, i)).durable().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let journal = dir.0.join(journal_name(1));
    assert!(fs::metadata(&journal).unwrap().len() >= 2 * JOURNAL_CHUNK);
    let loaded = Store::<Rec>::open(&dir.0, Durability::Sync).unwrap().load();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    assert_eq!(loaded.records.unwrap().len(), 600);
}
