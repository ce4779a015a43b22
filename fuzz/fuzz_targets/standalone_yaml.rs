//! The standalone file (`conf/apisix.yaml` / `apisix.json`) on arbitrary bytes.
//!
//! The first byte chooses the format (even: YAML, which needs `#END`; odd: JSON); the rest is the
//! file. It goes through `store::yaml::parse`, `build_state` and `Snapshot::build`, as the file
//! watcher reads it.
//!
//! Properties: no panic; reading is deterministic; and what `moongate export` would write for the
//! resulting state reads back as the same objects with nothing skipped (export, then import, loses
//! nothing). The round trip is checked only when the export holds no `${{`, which the reader
//! would substitute.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moongate::fuzzing::standalone;

fuzz_target!(|data: &[u8]| {
    let [format, file @ ..] = data else {
        return;
    };
    let json = format & 1 == 1;
    let report = standalone(file, json);
    assert_eq!(
        report,
        standalone(file, json),
        "reading is not deterministic"
    );
    let Ok(report) = report else {
        return;
    };
    if report.rendered.contains("${{") {
        return;
    }
    let reread = standalone(report.rendered.as_bytes(), false)
        .unwrap_or_else(|e| panic!("the export does not read back: {e}\n{}", report.rendered));
    assert_eq!(reread.skipped, Vec::new(), "the export has invalid items");
    assert_eq!(
        reread.items, report.items,
        "the export reads back differently"
    );
});
