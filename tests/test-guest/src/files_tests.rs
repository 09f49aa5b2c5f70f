//! Host tests of the file store: paths, bounds, reservations.

use std::vec;

use super::*;

fn put(store: &mut FileStore, path: &str, data: &[u8]) -> Result<u64, FileError> {
    let key = store.check_writable(path)?;
    let mut res = store.reservation();
    store.reserve(&key, &mut res, data.len())?;
    store.commit(&key, data.to_vec(), DEFAULT_MODE, res)
}

#[test]
fn paths_are_absolute_canonical_file_names() {
    assert_eq!(normalize("/a/b").unwrap(), "/a/b");
    assert_eq!(normalize("//a/./c/../b").unwrap(), "/a/b");
    assert_eq!(normalize("/../x").unwrap(), "/x");
    for bad in ["a/b", "", "/a/", "/", "/a/..", "/a\0b"] {
        assert!(
            matches!(normalize(bad), Err(FileError::Invalid(_))),
            "{bad:?}"
        );
    }
    let long = format!("/{}", "x".repeat(MAX_PATH));
    assert!(matches!(normalize(&long), Err(FileError::Invalid(_))));
}

#[test]
fn files_and_directories_do_not_overlap() {
    let mut s = FileStore::default();
    put(&mut s, "/a/b", b"1").unwrap();
    put(&mut s, "/a-b", b"2").unwrap();
    assert!(matches!(s.get("/a"), Err(FileError::Invalid(_))));
    assert!(matches!(s.check_writable("/a"), Err(FileError::Invalid(_))));
    assert!(matches!(
        s.check_writable("/a/b/c"),
        Err(FileError::Invalid(_))
    ));
    assert!(matches!(s.get("/a/c"), Err(FileError::NotFound(_))));
    assert!(matches!(s.get("/a/b/c"), Err(FileError::NotFound(_))));
    assert_eq!(s.get("/a/./b").unwrap().data.as_slice(), b"1");
}

#[test]
fn bytes_are_bounded_with_writes_in_progress_and_replacements() {
    let mut s = FileStore::new(10, 5);
    put(&mut s, "/f", b"123456").unwrap();
    // Replacing /f may use its 6 bytes again.
    let mut res = s.reservation();
    s.reserve("/f", &mut res, 10).unwrap();
    assert_eq!(s.reserved_bytes(), 10);
    // Another file now has no room: /f's old bytes and the write fill it.
    let mut other = s.reservation();
    let e = s.reserve("/g", &mut other, 1).unwrap_err();
    assert!(
        e.message()
            .starts_with("no space left in the test guest's file store")
    );
    assert!(matches!(e, FileError::NoSpace(_)));
    assert_eq!(s.commit("/f", vec![b'x'; 10], 0o600, res), Ok(10));
    assert_eq!((s.stored_bytes(), s.reserved_bytes()), (10, 0));
    assert_eq!(s.get("/f").unwrap().mode, 0o600);
    drop(other);
    assert!(matches!(
        put(&mut s, "/g", b"1"),
        Err(FileError::NoSpace(_))
    ));
    assert_eq!(put(&mut s, "/f", b""), Ok(0));
    assert_eq!(s.stored_bytes(), 0);
}

#[test]
fn a_dropped_write_gives_its_bytes_back() {
    let s = FileStore::new(10, 5);
    let mut res = s.reservation();
    s.reserve("/f", &mut res, 7).unwrap();
    assert!(s.reserve("/f", &mut res, 4).is_err());
    assert_eq!(s.reserved_bytes(), 7);
    drop(res);
    assert_eq!(s.reserved_bytes(), 0);
}

#[test]
fn files_are_bounded_in_count() {
    let mut s = FileStore::new(1000, 3);
    for name in ["/1", "/2", "/3"] {
        put(&mut s, name, b"x").unwrap();
    }
    let e = s.check_writable("/4").unwrap_err();
    assert!(matches!(e, FileError::NoSpace(_)), "{e:?}");
    // Replacing one is fine.
    assert_eq!(put(&mut s, "/2", b"yy"), Ok(2));
    assert_eq!((s.len(), s.stored_bytes()), (3, 4));
}

#[test]
fn a_reader_keeps_the_bytes_of_a_replaced_file() {
    let mut s = FileStore::default();
    put(&mut s, "/f", b"old").unwrap();
    let held = s.get("/f").unwrap().data.clone();
    put(&mut s, "/f", b"new!").unwrap();
    assert_eq!(held.as_slice(), b"old");
    assert_eq!(s.get("/f").unwrap().data.as_slice(), b"new!");
}
