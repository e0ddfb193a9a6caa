//! A config and a patch separated by a line `===`: loading and applying never panic, and a
//! successful result encodes to text that loads again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use machinery::patch::{apply, Patch};
use machinery::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (config, patch) = text.split_once("\n===\n").unwrap_or((text, ""));
    let Ok(cfg) = Config::parse(config) else {
        return;
    };
    let Ok(patch) = Patch::parse(patch) else {
        return;
    };
    if let Ok(out) = apply(cfg.clone(), &[patch]) {
        let encoded = out.encode();
        Config::parse(&encoded).expect("patched output loads");
        let diff = machinery::configdiff::diff(&cfg, &out);
        if !diff.is_empty() {
            let back = apply(cfg, &[Patch::parse(&diff).expect("diff loads")]).expect("diff applies");
            assert_eq!(back.encode(), encoded);
        }
    }
});
