//! Tests of operator state: redistribution on rescale for each kind, codec checks, corrupt blobs.

use super::*;

fn task(subtask: u32, backend: &OperatorStateBackend) -> TaskStateSnapshot {
    TaskStateSnapshot {
        operator_id: "src".into(),
        subtask_index: subtask,
        keyed_state: None,
        operator_state: backend.snapshot(),
    }
}

/// Subtask `i` of 3 holds list elements `10 i + 0..=i`, union element `i`, and the same broadcast map.
fn three_subtasks() -> Vec<TaskStateSnapshot> {
    (0..3u32)
        .map(|i| {
            let mut b = OperatorStateBackend::new();
            let list = b.list_state::<u64>("offsets").unwrap();
            for k in 0..=u64::from(i) {
                list.add(&mut b, &(10 * u64::from(i) + k)).unwrap();
            }
            let union = b.union_list_state::<u32>("seen").unwrap();
            union.add(&mut b, &i).unwrap();
            let rules = b.broadcast_state::<String, u64>("rules").unwrap();
            rules.put(&mut b, &"b".into(), &2).unwrap();
            rules.put(&mut b, &"a".into(), &1).unwrap();
            rules.put(&mut b, &"a".into(), &11).unwrap();
            let mut t = task(i, &b);
            t.operator_state.insert("engine-blob".into(), vec![1, 2, 3]);
            t
        })
        .collect()
}

fn restored(index: u32, parallelism: u32, tasks: &[TaskStateSnapshot]) -> OperatorStateBackend {
    OperatorStateBackend::restore("src", index, parallelism, tasks).unwrap()
}

#[test]
fn list_state_is_split_union_state_is_whole_broadcast_state_is_the_same_everywhere() {
    let tasks = three_subtasks();
    // Same parallelism: every subtask gets its own list back.
    for i in 0..3u32 {
        let mut b = restored(i, 3, &tasks);
        let list = b.list_state::<u64>("offsets").unwrap();
        let own: Vec<u64> = (0..=u64::from(i)).map(|k| 10 * u64::from(i) + k).collect();
        assert_eq!(list.get(&b).unwrap(), own);
        let union = b.union_list_state::<u32>("seen").unwrap();
        assert_eq!(union.get(&b).unwrap(), vec![0, 1, 2]);
    }
    // Rescale to 2 and to 4: the six elements are split in contiguous shares, each once.
    for parallelism in [1u32, 2, 4, 7] {
        let mut all = Vec::new();
        for i in 0..parallelism {
            let mut b = restored(i, parallelism, &tasks);
            let list = b.list_state::<u64>("offsets").unwrap();
            let share = list.get(&b).unwrap();
            assert!(share.len() <= 6usize.div_ceil(parallelism as usize));
            all.extend(share);
            let rules = b.broadcast_state::<String, u64>("rules").unwrap();
            assert_eq!(
                rules.entries(&b).unwrap(),
                vec![("a".to_string(), 11), ("b".to_string(), 2)]
            );
            assert_eq!(rules.get(&b, &"c".into()).unwrap(), None);
            rules.remove(&mut b, &"a".into()).unwrap();
            assert_eq!(rules.get(&b, &"a".into()).unwrap(), None);
            let names = b.state_names();
            assert_eq!(
                names,
                ["offsets", "rules", "seen"],
                "engine blobs are not states"
            );
        }
        assert_eq!(
            all,
            vec![0, 10, 11, 20, 21, 22],
            "parallelism {parallelism}"
        );
    }
    // A new state in a restored backend starts empty; a state of another operator is not taken.
    let mut b = OperatorStateBackend::restore("other", 0, 1, &tasks).unwrap();
    let list = b.list_state::<u64>("offsets").unwrap();
    assert!(list.get(&b).unwrap().is_empty());
    list.update(&mut b, &[5, 6]).unwrap();
    assert_eq!(list.get(&b).unwrap(), vec![5, 6]);
}

#[test]
fn kinds_and_codecs_are_checked() {
    let mut b = OperatorStateBackend::new();
    b.list_state::<u64>("x").unwrap();
    assert!(b.union_list_state::<u64>("x").is_err(), "another kind");
    assert!(b.list_state::<String>("x").is_err(), "another codec");
    assert!(b.broadcast_state::<u64, u64>("x").is_err());
    let ghost = OperatorListState::<u64>::new("never-registered");
    assert_eq!(
        ghost.get(&b).unwrap_err().kind(),
        crate::ErrorKind::InvalidArgument
    );
    assert!(
        OperatorStateBackend::restore("src", 3, 3, &[]).is_err(),
        "subtask out of range"
    );
}

#[test]
fn corrupt_or_disagreeing_blobs_are_typed_errors() {
    let tasks = three_subtasks();
    let blob = tasks[0].operator_state["state:offsets"].clone();
    for cut in 0..blob.len() {
        let mut t = tasks.clone();
        t[0].operator_state
            .insert("state:offsets".into(), blob[..cut].to_vec());
        let err = OperatorStateBackend::restore("src", 0, 3, &t).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "cut at {cut}");
    }
    let mut t = tasks.clone();
    let mut other = OperatorStateBackend::new();
    other.list_state::<String>("offsets").unwrap();
    t[1].operator_state = other.snapshot();
    assert_eq!(
        OperatorStateBackend::restore("src", 0, 3, &t)
            .unwrap_err()
            .kind(),
        crate::ErrorKind::Corrupt,
        "subtasks disagree on the codec"
    );
    let mut huge = vec![VERSION, 0];
    huge.put_len_prefixed(|_| {});
    huge.put_u32(u32::MAX);
    let mut t = tasks;
    t[0].operator_state.insert("state:offsets".into(), huge);
    assert!(
        OperatorStateBackend::restore("src", 0, 3, &t).is_err(),
        "a count the bytes cannot hold"
    );
}

/// Found by cargo fuzz (`metadata` target): a task of subtask `u32::MAX` overflowed the old parallelism.
#[test]
fn fuzz_operator_state_subtask_index_u32_max_does_not_overflow() {
    let mut tasks = three_subtasks();
    tasks[2].subtask_index = u32::MAX;
    for (index, parallelism) in [(0, 1), (1, 2), (2, 3)] {
        let mut b = OperatorStateBackend::restore("src", index, parallelism, &tasks).unwrap();
        let list = b.list_state::<u64>("offsets").unwrap();
        assert!(list.get(&b).unwrap().len() <= 6);
    }
}
