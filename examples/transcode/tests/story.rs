//! Runs the example's whole story as CI would (`cargo run -p example-transcode`) and
//! requires it to exit 0, which it does only if every one of its checks held.

#[test]
fn the_story_runs_and_every_check_holds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_example-transcode"))
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("All checks held."), "{stdout}");
    assert!(!stdout.contains("[FAILED]"), "{stdout}");
}
