//! herald-client's tests, one binary: the SDK against the real server (in-process).

mod sdk;
