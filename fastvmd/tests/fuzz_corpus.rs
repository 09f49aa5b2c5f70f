//! Every committed fuzz corpus input (`fastvmd/fuzz/corpus/<target>/`) run
//! through its target on stable, no fuzzing engine needed: what fuzzing
//! found stays fixed. Each target must have seeds.

use std::path::PathBuf;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in fastvmd::fuzzing::TARGETS {
        let dir = root.join(name);
        let inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(!inputs.is_empty(), "no seeds in {}", dir.display());
        for input in inputs {
            let bytes = std::fs::read(&input).unwrap();
            let run = std::panic::catch_unwind(|| target(&bytes));
            assert!(run.is_ok(), "{name}: {} panics", input.display());
        }
    }
}

#[test]
fn edge_inputs_pass_every_target() {
    let edges: [&[u8]; 5] = [b"", b"\0", &[0xff; 64], b"{}", &[0x41; 4096]];
    for (name, target) in fastvmd::fuzzing::TARGETS {
        for edge in edges {
            let run = std::panic::catch_unwind(|| target(edge));
            assert!(
                run.is_ok(),
                "{name} panics on {:?}",
                &edge[..edge.len().min(8)]
            );
        }
    }
}
