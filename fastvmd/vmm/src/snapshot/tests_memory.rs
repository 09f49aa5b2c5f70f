//! Tests of the sparse `memory` file and its copy-on-write mapping.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::*;

const PAGE: usize = 4096;
const MIB: usize = 1 << 20;
const GIB4: u64 = 4 << 30;

fn ranges() -> Vec<(GuestAddress, usize)> {
    vec![(GuestAddress(0), 4 * MIB), (GuestAddress(GIB4), 2 * MIB)]
}

/// Guest memory with non-zero data in 12 pages (one of them the last page
/// of the high region) and 16 touched all-zero pages.
fn sample_memory() -> (GuestMemoryMmap<()>, usize) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&ranges()).unwrap();
    mem.write_slice(&[0x11; PAGE], GuestAddress(0)).unwrap();
    let run: Vec<u8> = (0..8 * PAGE).map(|i| (i % 253) as u8 + 1).collect();
    mem.write_slice(&run, GuestAddress(MIB as u64)).unwrap();
    // A page with a single non-zero byte at its end.
    mem.write_slice(&[7], GuestAddress(3 * MIB as u64 - 1))
        .unwrap();
    mem.write_slice(&[0x22; PAGE], GuestAddress(GIB4 + 3 * PAGE as u64))
        .unwrap();
    mem.write_slice(
        &[0x33; PAGE],
        GuestAddress(GIB4 + 2 * MIB as u64 - PAGE as u64),
    )
    .unwrap();
    // Touched but zero.
    mem.write_slice(&[0; 16 * PAGE], GuestAddress(2 * MIB as u64))
        .unwrap();
    let mut read = [0u8; PAGE];
    mem.read_slice(&mut read, GuestAddress(GIB4 + MIB as u64))
        .unwrap();
    (mem, 12 * PAGE)
}

fn contents(mem: &GuestMemoryMmap<()>) -> Vec<Vec<u8>> {
    mem.iter()
        .map(|r| {
            let mut buf = vec![0u8; r.len() as usize];
            mem.read_slice(&mut buf, r.start_addr()).unwrap();
            buf
        })
        .collect()
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn sparse_file_round_trips_through_map_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("memory");
    let (mem, data) = sample_memory();
    let stats = write_memory(&mem, &path).unwrap();
    assert_eq!(stats.logical_bytes, 6 * MIB as u64);
    assert_eq!(stats.bytes_written, data as u64);
    assert_eq!(stats.pages_total, (6 * MIB / PAGE) as u64);
    assert!(stats.pages_scanned >= 12 + 16, "{stats:?}");
    assert_eq!(stats.runs, 5, "{stats:?}");
    assert_eq!(fs::metadata(&path).unwrap().len(), 6 * MIB as u64);
    let alloc = allocated(&path);
    assert!(
        alloc >= data as u64 && alloc <= data as u64 + 64 * 1024,
        "{alloc}"
    );
    // Region 1 is at file offset 4 MiB.
    let mut page = [0u8; PAGE];
    File::open(&path)
        .unwrap()
        .read_exact_at(&mut page, 4 * MIB as u64 + 3 * PAGE as u64)
        .unwrap();
    assert_eq!(page, [0x22; PAGE]);

    let restored = map_memory(&path, &ranges()).unwrap();
    assert_eq!(restored.num_regions(), 2);
    assert_eq!(contents(&restored), contents(&mem));
    // Refusing writes to an existing file.
    assert!(matches!(
        write_memory(&mem, &path),
        Err(SnapshotError::Io { op: "create", .. })
    ));
}

#[test]
fn writes_after_map_stay_private() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("memory");
    let (mem, _) = sample_memory();
    write_memory(&mem, &path).unwrap();
    let before = fs::read(&path).unwrap();
    let a = map_memory(&path, &ranges()).unwrap();
    let b = map_memory(&path, &ranges()).unwrap();
    a.write_slice(&[0xee; 100], GuestAddress(10)).unwrap();
    a.write_slice(&[0xee; 100], GuestAddress(GIB4 + 5 * MIB as u64 / 4))
        .unwrap();
    let mut got = [0u8; 100];
    a.read_slice(&mut got, GuestAddress(10)).unwrap();
    assert_eq!(got, [0xee; 100]);
    b.read_slice(&mut got, GuestAddress(10)).unwrap();
    assert_eq!(got, [0x11; 100]);
    drop(a);
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn mapping_survives_deleting_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("memory");
    let (mem, _) = sample_memory();
    write_memory(&mem, &path).unwrap();
    let clone = map_memory(&path, &ranges()).unwrap();
    fs::remove_file(&path).unwrap();
    assert_eq!(contents(&clone), contents(&mem));
    clone.write_slice(&[9; PAGE], GuestAddress(GIB4)).unwrap();
    let mut got = [0u8; PAGE];
    clone.read_slice(&mut got, GuestAddress(GIB4)).unwrap();
    assert_eq!(got, [9; PAGE]);
}

#[test]
fn map_memory_refuses_a_wrong_size() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("memory");
    let (mem, _) = sample_memory();
    write_memory(&mem, &path).unwrap();
    let err = map_memory(&path, &[(GuestAddress(0), 8 * MIB)]).unwrap_err();
    assert!(
        matches!(err, SnapshotError::MemoryLayout { actual, expected, .. }
            if actual == 6 * MIB as u64 && expected == 8 * MIB as u64),
        "{err}"
    );
    assert!(err.to_string().contains("6291456 bytes"), "{err}");
    assert!(matches!(
        map_memory(&tmp.path().join("none"), &ranges()),
        Err(SnapshotError::Io { op: "open", .. })
    ));
}

/// A restored clone (memory mapped from a snapshot's file whose pages are
/// not in the page cache) snapshotted again: the backing file's data must
/// be found although none of it is resident.
#[test]
fn snapshot_of_a_mapped_clone_includes_backing_data() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let (mem, data) = sample_memory();
    write_memory(&mem, &first).unwrap();
    let f = File::open(&first).unwrap();
    f.sync_all().unwrap();
    // SAFETY: advisory call on an open descriptor; drops clean page cache.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };

    let clone = map_memory(&first, &ranges()).unwrap();
    let mut dropped = true;
    for r in clone.iter() {
        let mut v = vec![0u8; r.len() as usize / PAGE];
        // SAFETY: the region's mapping is page-aligned and `v` has one
        // byte per page.
        unsafe { libc::mincore(r.as_ptr().cast(), r.len() as usize, v.as_mut_ptr()) };
        dropped &= v.iter().all(|&x| x & 1 == 0);
    }
    if dropped {
        // Untouched clone, nothing resident: everything must come from the
        // backing file's data ranges.
        let untouched = tmp.path().join("untouched");
        let stats = write_memory(&clone, &untouched).unwrap();
        assert_eq!(stats.bytes_written, data as u64, "{stats:?}");
        assert_eq!(fs::read(&untouched).unwrap(), fs::read(&first).unwrap());
    } else {
        // E.g. tmpfs, where the page cache is the file.
        println!("page cache could not be dropped; backing-data case not isolated");
    }
    // One new page, and one data page overwritten with zeros.
    clone
        .write_slice(&[0x44; PAGE], GuestAddress(3 * MIB as u64))
        .unwrap();
    clone.write_slice(&[0; PAGE], GuestAddress(0)).unwrap();
    let second = tmp.path().join("second");
    let stats = write_memory(&clone, &second).unwrap();
    assert_eq!(stats.bytes_written, data as u64, "{stats:?}");
    assert!(stats.pages_scanned >= 12, "{stats:?}");
    let again = map_memory(&second, &ranges()).unwrap();
    assert_eq!(contents(&again), contents(&clone));
    let mut page = [1u8; PAGE];
    again.read_slice(&mut page, GuestAddress(0)).unwrap();
    assert_eq!(page, [0; PAGE]);
}

#[test]
fn is_zero_checks_every_byte() {
    let mut buf = vec![0u8; PAGE + 3];
    assert!(memory::is_zero(&buf));
    assert!(memory::is_zero(&buf[1..]));
    for i in [0, 1, 15, 16, 255, 256, PAGE - 1, PAGE + 2] {
        buf[i] = 1;
        assert!(!memory::is_zero(&buf), "{i}");
        assert!(!memory::is_zero(&buf[i.min(1)..]), "{i}");
        buf[i] = 0;
    }
}

/// Not an assertion: how long a 64 MiB-touched 2 GiB VM takes to write
/// (plus fsync), and how long restore's open + map take.
#[test]
fn timing_64mib_touched_of_2gib() {
    let tmp = tempfile::tempdir().unwrap();
    let ranges = [(GuestAddress(0), 2048 * MIB)];
    let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
    // 256 runs of 256 KiB, spread over the 2 GiB.
    let chunk: Vec<u8> = (0..256 * 1024).map(|i| (i % 199) as u8 + 1).collect();
    for i in 0..256u64 {
        mem.write_slice(&chunk, GuestAddress(i * 8 * MIB as u64))
            .unwrap();
    }
    let payload = encode_state(&vec![0u64; 4096]).unwrap();

    let t0 = Instant::now();
    let writer = SnapshotWriter::begin(&tmp.path().join("snap")).unwrap();
    let stats = write_memory(&mem, &writer.memory_path()).unwrap();
    let t_mem = t0.elapsed();
    write_vmstate(&writer.vmstate_path(), &payload).unwrap();
    let dir = writer
        .commit(Manifest::for_host(2048, 1, "", "vmlinux"))
        .unwrap();
    let t_all = t0.elapsed();

    let t1 = Instant::now();
    let reader = SnapshotReader::open(&dir).unwrap();
    let restored = map_memory(&reader.memory_path(), &ranges).unwrap();
    let t_open = t1.elapsed();
    let alloc = allocated(&reader.memory_path());
    println!(
        "snapshot 64 MiB touched of 2 GiB: write_memory {:?}, total with vmstate+fsync+rename {:?}; \
         {} bytes written, {} pages scanned, {} runs, {} bytes allocated; \
         restore open+map {:?}",
        t_mem, t_all, stats.bytes_written, stats.pages_scanned, stats.runs, alloc, t_open
    );
    assert_eq!(stats.bytes_written, 64 * MIB as u64);
    let mut got = vec![0u8; chunk.len()];
    restored
        .read_slice(&mut got, GuestAddress(255 * 8 * MIB as u64))
        .unwrap();
    assert_eq!(got, chunk);
}
