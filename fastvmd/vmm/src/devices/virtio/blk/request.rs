//! Execution of one virtio-blk request (virtio 1.1 §5.2.6).
//!
//! A request is a 16-byte header (type, reserved, sector) in the readable
//! part of the chain, then data (readable for writes, writable for reads and
//! GET_ID), then a one-byte status as the last writable byte. The layout of
//! these parts across descriptors is free (VIRTIO_F_ANY_LAYOUT is implied by
//! VIRTIO_F_VERSION_1), so the chain is accessed through virtio-queue's
//! [`Reader`] and [`Writer`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::{DescriptorChain, Reader, Writer};

use super::{ID_LEN, SECTOR_SIZE};
use crate::devices::virtio::GuestMemory;

/// Size of the copy buffer between the file and guest memory.
const CHUNK: usize = 64 * 1024;
/// Size of the request header.
const HEADER_LEN: usize = 16;

/// The backend of a block device: what a request needs to execute.
#[derive(Debug)]
pub(super) struct Disk {
    /// The backing file.
    pub file: Arc<File>,
    /// Whether writes are refused.
    pub read_only: bool,
    /// Capacity in bytes (a multiple of [`SECTOR_SIZE`]).
    pub capacity: u64,
    /// The ID returned by GET_ID, NUL padded.
    pub id: [u8; ID_LEN],
}

/// Executes the request in `chain` and writes its status; returns the number
/// of bytes written to guest memory (the used length).
pub(super) fn process(chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory, disk: &Disk) -> u32 {
    let reader = Reader::new(mem, chain.clone());
    let mut writer = match Writer::new(mem, chain) {
        Ok(w) => w,
        Err(e) => {
            crate::guest_warn!(
                "virtio-blk: bad writable buffers",
                "virtio-blk: bad writable buffers: {e}"
            );
            return 0;
        }
    };
    let Some(data_len) = writer.available_bytes().checked_sub(1) else {
        crate::guest_warn!(
            "virtio-blk: request without a status byte",
            "virtio-blk: request without a status byte"
        );
        return 0;
    };
    let mut status_writer = match writer.split_at(data_len) {
        Ok(w) => w,
        Err(e) => {
            crate::guest_warn!(
                "virtio-blk: splitting the status byte",
                "virtio-blk: splitting the status byte: {e}"
            );
            return 0;
        }
    };
    let status = match reader {
        Ok(mut reader) => execute(&mut reader, &mut writer, disk),
        Err(e) => {
            crate::guest_warn!(
                "virtio-blk: bad readable buffers",
                "virtio-blk: bad readable buffers: {e}"
            );
            VIRTIO_BLK_S_IOERR
        }
    };
    let written = writer.bytes_written();
    // The status byte was checked to exist and be writable above.
    let status_len = match status_writer.write_all(&[status as u8]) {
        Ok(()) => 1,
        Err(e) => {
            crate::guest_warn!(
                "virtio-blk: writing the status",
                "virtio-blk: writing the status: {e}"
            );
            0
        }
    };
    u32::try_from(written + status_len).unwrap_or(u32::MAX)
}

/// Executes one request with the header and output data in `reader` and the
/// input data area (without the status byte) in `writer`; returns the status.
fn execute(reader: &mut Reader<'_>, writer: &mut Writer<'_>, disk: &Disk) -> u32 {
    let mut header = [0u8; HEADER_LEN];
    if reader.read_exact(&mut header).is_err() {
        crate::guest_warn!(
            "virtio-blk: short request header",
            "virtio-blk: short request header"
        );
        return VIRTIO_BLK_S_IOERR;
    }
    let mut ty = [0u8; 4];
    ty.copy_from_slice(&header[..4]);
    let mut sector = [0u8; 8];
    sector.copy_from_slice(&header[8..]);
    let ty = u32::from_le_bytes(ty);
    let sector = u64::from_le_bytes(sector);

    let result = match ty {
        VIRTIO_BLK_T_IN => range(disk, sector, writer.available_bytes())
            .and_then(|offset| read_disk(disk, offset, writer)),
        VIRTIO_BLK_T_OUT if disk.read_only => {
            crate::guest_warn!(
                "virtio-blk: write to a read-only disk",
                "virtio-blk: write to a read-only disk"
            );
            return VIRTIO_BLK_S_IOERR;
        }
        VIRTIO_BLK_T_OUT => range(disk, sector, reader.available_bytes())
            .and_then(|offset| write_disk(disk, offset, reader)),
        VIRTIO_BLK_T_FLUSH => disk.file.sync_data(),
        VIRTIO_BLK_T_GET_ID => {
            let n = ID_LEN.min(writer.available_bytes());
            writer.write_all(&disk.id[..n])
        }
        _ => {
            crate::guest_warn!(
                "virtio-blk: unsupported request type",
                ty,
                "virtio-blk: unsupported request type"
            );
            return VIRTIO_BLK_S_UNSUPP;
        }
    };
    match result {
        Ok(()) => VIRTIO_BLK_S_OK,
        Err(e) => {
            crate::guest_warn!(
                "virtio-blk: request failed",
                ty,
                sector,
                "virtio-blk: request failed: {e}"
            );
            VIRTIO_BLK_S_IOERR
        }
    }
}

/// The byte offset of a `len`-byte transfer at `sector`, if it is whole
/// sectors and inside the disk.
fn range(disk: &Disk, sector: u64, len: usize) -> io::Result<u64> {
    let len = len as u64;
    let offset = sector.checked_mul(SECTOR_SIZE);
    match offset.and_then(|o| o.checked_add(len).map(|end| (o, end))) {
        Some((o, end)) if end <= disk.capacity && len % SECTOR_SIZE == 0 => Ok(o),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes at sector {sector} outside the disk or not whole sectors"),
        )),
    }
}

/// Copies the disk at `offset` into the whole of `writer`.
fn read_disk(disk: &Disk, mut offset: u64, writer: &mut Writer<'_>) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK.min(writer.available_bytes())];
    while writer.available_bytes() > 0 {
        let n = buf.len().min(writer.available_bytes());
        disk.file.read_exact_at(&mut buf[..n], offset)?;
        writer.write_all(&buf[..n])?;
        offset += n as u64;
    }
    Ok(())
}

/// Copies the rest of `reader` to the disk at `offset`.
fn write_disk(disk: &Disk, mut offset: u64, reader: &mut Reader<'_>) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK.min(reader.available_bytes())];
    while reader.available_bytes() > 0 {
        let n = buf.len().min(reader.available_bytes());
        reader.read_exact(&mut buf[..n])?;
        disk.file.write_all_at(&buf[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}
