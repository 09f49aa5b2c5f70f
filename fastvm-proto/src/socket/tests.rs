//! Socket frames: wire names, round trips, line limits, op names.

use std::io::Cursor;

use serde_json::json;

use super::*;

#[test]
fn request_round_trip_and_names() {
    let req = SocketRequest::new(7, "getVM")
        .param("id", "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b")
        .body(json!({"x": 1}));
    let req = SocketRequest {
        api_key: Some("hlm_k".into()),
        ..req
    };
    let line = encode_frame(&req).unwrap();
    assert!(line.ends_with(b"\n"));
    assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
    let v: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(
        v,
        json!({"id": 7, "op": "getVM", "params": {"id": "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"},
               "body": {"x": 1}, "apiKey": "hlm_k"})
    );
    let back: SocketRequest = decode_frame(&line).unwrap();
    assert_eq!(back, req);
    assert_eq!(back.parsed_op(), Some(Op::GetVm));
    assert_eq!(
        back.param_str("id"),
        Some("6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b")
    );

    // Minimal request: optional members omitted, and read back when absent.
    let min = SocketRequest::new(1, "listVMs");
    assert_eq!(
        serde_json::to_value(&min).unwrap(),
        json!({"id": 1, "op": "listVMs"})
    );
    let back: SocketRequest = decode_frame(b"{\"id\":1,\"op\":\"listVMs\"}\r\n").unwrap();
    assert_eq!(back, min);
}

#[test]
fn response_round_trip() {
    let ok = SocketResponse::new(7, 201, &json!({"id": "x"})).unwrap();
    assert!(ok.is_success());
    assert_eq!(ok.error_message(), None);
    let back: SocketResponse = decode_frame(&encode_frame(&ok).unwrap()).unwrap();
    assert_eq!(back, ok);

    let err = SocketResponse::error(8, 404, "vm not found");
    assert_eq!(
        serde_json::to_value(&err).unwrap(),
        json!({"id": 8, "status": 404, "body": {"error": "vm not found"}})
    );
    assert!(!err.is_success());
    assert_eq!(err.error_message(), Some("vm not found"));
}

#[test]
fn events() {
    let ev = SocketEvent {
        id: 3,
        event: EventKind::Vm,
        op: EventOp::Updated,
        data: json!({"id": "x", "status": "running"}),
    };
    assert_eq!(
        serde_json::to_value(&ev).unwrap(),
        json!({"id": 3, "event": "vm", "op": "updated", "data": {"id": "x", "status": "running"}})
    );
    for (kind, name) in [
        (EventKind::Vm, "vm"),
        (EventKind::Snapshot, "snapshot"),
        (EventKind::Quota, "quota"),
    ] {
        assert_eq!(json!(kind), json!(name));
    }
    for (op, name) in [
        (EventOp::Created, "created"),
        (EventOp::Updated, "updated"),
        (EventOp::Deleted, "deleted"),
    ] {
        assert_eq!(json!(op), json!(name));
    }

    // A client tells events from responses.
    let f: ServerFrame = decode_frame(&encode_frame(&ev).unwrap()).unwrap();
    assert_eq!(f, ServerFrame::Event(ev));
    let resp = SocketResponse::error(3, 400, "bad");
    let f: ServerFrame = decode_frame(&encode_frame(&resp).unwrap()).unwrap();
    assert_eq!(f, ServerFrame::Response(resp));

    let w: WatchRequest = serde_json::from_value(json!({"events": ["snapshot"]})).unwrap();
    assert!(w.wants(EventKind::Snapshot) && !w.wants(EventKind::Vm));
    assert!(WatchRequest::default().wants(EventKind::Quota));
}

#[test]
fn ops() {
    for op in Op::ALL {
        assert_eq!(Op::from_name(op.name()), Some(*op));
    }
    let api = [
        "getHealthz",
        "getLivez",
        "getReadyz",
        "listVMs",
        "createVM",
        "getVM",
        "updateVM",
        "deleteVM",
        "replaceVMFirewall",
        "patchVMFirewall",
        "createVMConsoleToken",
        "execVM",
        "createSnapshot",
        "listSnapshots",
        "updateSnapshot",
        "deleteSnapshot",
        "getOrgQuotas",
    ];
    let extra = [
        "watch",
        "attachConsole",
        "execStream",
        "writeFile",
        "readFile",
        "forwardPort",
        "listForwards",
        "closeForward",
    ];
    let admin = [
        "createOrg",
        "createApiKey",
        "revokeApiKey",
        "setQuotaLimits",
        "mintToken",
    ];
    let images = ["listImages", "importImage", "deleteImage"];
    let all: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
    let want: Vec<&str> = api
        .iter()
        .chain(&extra)
        .chain(&admin)
        .chain(&images)
        .copied()
        .collect();
    assert_eq!(all, want);
    for name in admin.iter().chain(&["importImage", "deleteImage"]) {
        assert!(Op::from_name(name).unwrap().is_admin(), "{name}");
    }
    assert!(!Op::CreateVm.is_admin());
    assert!(!Op::ListImages.is_admin(), "every org boots images");
    assert_eq!(Op::from_name("createvm"), None);
    assert_eq!(Op::from_name("connectVMConsoleWebsocket"), None);
}

#[test]
fn bad_frames() {
    assert!(matches!(
        decode_frame::<SocketRequest>(b"not json\n"),
        Err(FrameError::Json(_))
    ));
    assert!(matches!(
        decode_frame::<SocketRequest>(b"{\"op\":\"getVM\"}\n"),
        Err(FrameError::Json(_))
    ));
    let long = vec![b' '; MAX_FRAME + 1];
    assert!(matches!(
        decode_frame::<SocketRequest>(&long),
        Err(FrameError::TooLong)
    ));
    let huge = SocketResponse {
        id: 1,
        status: 200,
        body: Value::String("x".repeat(MAX_FRAME)),
    };
    assert!(matches!(encode_frame(&huge), Err(FrameError::TooLong)));
}

#[test]
fn read_frames_from_a_stream() {
    let mut wire = Vec::new();
    wire.extend(encode_frame(&SocketRequest::new(1, "listVMs")).unwrap());
    wire.extend(encode_frame(&SocketRequest::new(2, "watch")).unwrap());
    let mut r = Cursor::new(wire);
    let mut buf = Vec::new();
    let a: SocketRequest = read_frame(&mut r, &mut buf).unwrap().unwrap();
    let b: SocketRequest = read_frame(&mut r, &mut buf).unwrap().unwrap();
    assert_eq!((a.id, b.id), (1, 2));
    assert!(
        read_frame::<_, SocketRequest>(&mut r, &mut buf)
            .unwrap()
            .is_none()
    );

    let mut cut = Cursor::new(b"{\"id\":1".to_vec());
    assert!(matches!(
        read_frame::<_, SocketRequest>(&mut cut, &mut buf),
        Err(FrameError::Io(_))
    ));

    let mut long = vec![b' '; MAX_FRAME + 5];
    long.push(b'\n');
    let mut r = Cursor::new(long);
    assert!(matches!(
        read_frame::<_, SocketRequest>(&mut r, &mut buf),
        Err(FrameError::TooLong)
    ));
}
