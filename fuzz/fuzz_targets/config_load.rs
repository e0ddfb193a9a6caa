//! Any text: loading never panics; what loads re-encodes to text that loads to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use machinery::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::parse(text) {
        let canonical = cfg.encode_canonical();
        let again = Config::parse(&canonical).expect("canonical output loads");
        assert_eq!(again, cfg);
        let _ = machinery::validate::validate(&cfg, machinery::validate::Mode::Metal);
        let _ = cfg.redacted();
    }
});
