//! A Kafka-API broker of the test's own (tansu, in memory, advertised through a proxy the
//! test controls) for the faults the shared broker cannot stage: a connection that breaks
//! after the broker wrote a batch but before its acknowledgement got back, a broker that goes
//! away, a record the broker refuses (tansu validates records against a JSON schema file).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A tansu broker on a free port whose advertised address is a [`KafkaProxy`] in front of
/// it, so every client connection (metadata says "connect to the proxy") passes the proxy.
pub struct PrivateTansu {
    pub proxy: KafkaProxy,
    /// `127.0.0.1:<proxy port>`: the bootstrap for Herald and for test consumers.
    pub bootstrap: String,
    /// Where tansu looks for `<topic>.json` record schemas (read on every produce).
    pub schema_dir: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PrivateTansu {
    /// Starts `tansu` (the binary at `tansu_bin`) with in-memory storage.
    pub async fn start(tansu_bin: &str) -> PrivateTansu {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let proxy = KafkaProxy::start(format!("127.0.0.1:{port}")).await;
        let dir = tempfile::tempdir().unwrap();
        let schema_dir = dir.path().join("schema");
        std::fs::create_dir(&schema_dir).unwrap();
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let child = std::process::Command::new(tansu_bin)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", proxy.port),
                "--storage-engine",
                "memory://tansu/",
                // Relative to the working directory: `<dir>/schema`.
                "--schema-registry",
                "file://schema",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tansu did not listen on {port}: {}",
                std::fs::read_to_string(dir.path().join("tansu.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        PrivateTansu {
            bootstrap: format!("127.0.0.1:{}", proxy.port),
            proxy,
            schema_dir,
            child,
            _dir: dir,
        }
    }
}

impl Drop for PrivateTansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback proxy that reads Kafka's framing (a 4-byte length, then the message; requests
/// start with api key and correlation id, responses with the correlation id), so it can
/// lose the acknowledgement of a produce the broker has already written, then break the
/// connection, as a network fault would. Like `proxy::Proxy`, it can also go down.
pub struct KafkaProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    /// Produce acknowledgements still to lose.
    lose_acks: Arc<AtomicUsize>,
    /// Produce acknowledgements lost so far.
    pub lost_acks: Arc<AtomicUsize>,
    cut: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

const PRODUCE: i16 = 0;

impl KafkaProxy {
    pub async fn start(target: String) -> KafkaProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = KafkaProxy {
            port,
            up: Arc::new(AtomicBool::new(true)),
            lose_acks: Arc::new(AtomicUsize::new(0)),
            lost_acks: Arc::new(AtomicUsize::new(0)),
            cut: Arc::new(Mutex::new(CancellationToken::new())),
            stop: CancellationToken::new(),
        };
        let (up, cut, stop) = (proxy.up.clone(), proxy.cut.clone(), proxy.stop.clone());
        let (lose, lost) = (proxy.lose_acks.clone(), proxy.lost_acks.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                if !up.load(Ordering::SeqCst) {
                    drop(client); // refused, as by a broker that is down
                    continue;
                }
                let token = cut.lock().unwrap().clone();
                let (target, lose, lost) = (target.clone(), lose.clone(), lost.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = relay(client, server, lose, lost) => {}
                    }
                });
            }
        });
        proxy
    }

    /// Loses the acknowledgements of the next `n` produce requests the broker answers,
    /// breaking each one's connection right after.
    pub fn lose_produce_acks(&self, n: usize) {
        self.lose_acks.store(n, Ordering::SeqCst);
    }

    pub fn lost_acks(&self) -> usize {
        self.lost_acks.load(Ordering::SeqCst)
    }

    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut cut = self.cut.lock().unwrap();
        cut.cancel();
        *cut = CancellationToken::new();
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut.lock().unwrap().cancel();
    }
}

/// One Kafka frame: its 4-byte length prefix and body.
async fn read_frame(from: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await.ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    from.read_exact(&mut frame).await.ok()?;
    let mut whole = len.to_vec();
    whole.extend_from_slice(&frame);
    Some(whole)
}

/// Relays frames both ways until either side closes or an acknowledgement is lost.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    lose: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let produces = Arc::new(Mutex::new(HashSet::<i32>::new()));
    let requests = {
        let produces = produces.clone();
        async move {
            while let Some(frame) = read_frame(&mut client_rx).await {
                // api_key (i16), api_version (i16), correlation_id (i32) after the length.
                if frame.len() >= 12 && i16::from_be_bytes([frame[4], frame[5]]) == PRODUCE {
                    let id = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                    produces.lock().unwrap().insert(id);
                }
                if server_tx.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }
    };
    let responses = async move {
        while let Some(frame) = read_frame(&mut server_rx).await {
            let id = (frame.len() >= 8)
                .then(|| i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]));
            let is_produce_ack = id.is_some_and(|id| produces.lock().unwrap().remove(&id));
            if is_produce_ack
                && lose
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                // The broker wrote the batch; the producer never hears so, and its connection breaks.
                lost.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if client_tx.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = responses => {}
    }
}
