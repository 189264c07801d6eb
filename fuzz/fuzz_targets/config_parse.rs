//! Config parsing: any text either parses into a valid config or is refused with an
//! error; it never panics (TOML, durations, trigger routes, JSON Schemas, keys).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = herald_server::Config::parse(text) {
            // What parsed is valid by its own rules.
            config.validate().expect("a parsed config validates");
        }
    }
});
