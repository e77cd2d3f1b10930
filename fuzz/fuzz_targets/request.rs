//! The HTTP request path, in process: route, body size, JSON decoding,
//! names, mount IDs, option values and sizes (`berth::api::docker::precheck`),
//! and the encoding of the error answer.
//!
//! Input: `<path>\n<body>` (no newline: the whole input is the body of a
//! Create). Run: `cd fuzz && cargo +nightly fuzz run request -- -dict=request.dict`.
#![no_main]

use std::path::{Component, Path};

use berth::api::docker::{precheck, Route};
use berth::api::response::Failure;
use berth::api::response;
use libfuzzer_sys::fuzz_target;

/// Docker's name rule, written independently of `VolumeName::parse`.
fn name_ok(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fuzz_target!(|data: &[u8]| {
    let (path, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => ("/VolumeDriver.Create".to_string(), data),
    };
    match precheck(&path, body) {
        Err(Failure { status, message: msg, .. }) => {
            assert!(!msg.is_empty(), "an error always says why");
            assert!(
                matches!(status.as_u16(), 400 | 404 | 413 | 500),
                "unexpected status {status}"
            );
            // The answer is well-formed JSON carrying the message.
            let resp = response::error(status, &msg);
            assert_eq!(resp.status(), status);
        }
        Ok(route) => {
            let (name, id) = match route {
                Route::Create | Route::Remove | Route::Path | Route::Get => {
                    let r: berth::protocol::NameRequest =
                        serde_json::from_slice(body).expect("accepted body decodes");
                    (r.name, None)
                }
                Route::Mount | Route::Unmount => {
                    let r: berth::protocol::MountRequest =
                        serde_json::from_slice(body).expect("accepted body decodes");
                    (r.name, r.id)
                }
                _ => return,
            };
            assert!(
                name_ok(&name),
                "accepted name {name:?} breaks Docker's rule"
            );
            // A name that passed can never leave the mount directory.
            let joined = Path::new("/var/lib/berth/volumes").join(&name);
            assert_eq!(joined.parent(), Some(Path::new("/var/lib/berth/volumes")));
            assert!(joined
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
            if let Some(id) = id {
                assert!(id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
});
