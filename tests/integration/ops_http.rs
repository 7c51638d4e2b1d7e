//! The HTTP endpoint under clients that hold it: thousands of idle connections and a header
//! sent a byte a second must not keep the probes from answering, and are closed after the
//! header timeout; and `/status` shows the effective config only to a holder of the status
//! token. Real TCP connections against the real server, in this process.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout::config::StatusToken;
use fanout::ops::http::{HttpLimits, HttpServer};
use fanout::ops::{OpsState, RoutingState};
use fanout::stats::Stats;

/// What a real /status config holds that an anonymous client must not see.
const BROKERS: &str = "kafka-0.kafka.internal:9093";
const SECRET_PATH: &str = "/etc/fanout/kafka-user/password";
const TOKEN: &str = "s3cr3t-status-token-0123456789";

fn server(limits: HttpLimits, token: Option<StatusToken>) -> HttpServer {
    let config = format!(
        "[kafka]\nbootstrap_servers = \"{BROKERS}\"\n[kafka.secret_files]\n\
         \"sasl.password\" = \"{SECRET_PATH}\"\n"
    );
    let ops = OpsState::new(
        Arc::new(Stats::default()),
        config,
        Duration::from_secs(30),
        token,
    );
    ops.set_routing(RoutingState::Native);
    HttpServer::start("127.0.0.1:0".parse().unwrap(), ops, limits).unwrap()
}

/// One request with HTTP/1.1 and extra header lines: (status code, body).
fn request(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// Raises this process's soft limit on open files to `needed`, within the hard limit.
fn allow_open_files(needed: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|soft| soft >= needed) {
        return;
    }
    assert!(
        limit.maximum.is_none_or(|hard| hard >= needed),
        "this test holds {needed} sockets, over the hard limit on open files ({:?}): raise it \
         (ulimit -Hn)",
        limit.maximum
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(needed),
            maximum: limit.maximum,
        },
    )
    .unwrap();
}

/// Whether the server has closed `stream`: its read ends (or is reset) instead of waiting.
fn closed_by_server(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

#[test]
fn idle_connections_and_a_slow_header_do_not_starve_the_probes_and_are_closed() {
    const IDLE: usize = 2_000;
    let header_timeout = HttpLimits::default().header_timeout;
    // The test's sockets, the server's (at most the cap) and what the other tests hold.
    allow_open_files(IDLE as u64 + 1_024);
    let limits = HttpLimits::default();
    let cap = limits.max_connections;
    let server = server(limits, None);
    let addr = server.addr();

    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    eprintln!("{IDLE} connections opened in {:?}", opened.elapsed());
    // A slowloris client: a valid request, a byte a second, never finished in time.
    let stop = Arc::new(AtomicBool::new(false));
    let slowloris = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            let started = Instant::now();
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: "
                .iter()
                .cycle()
            {
                if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            // Written to until the server hung up, or the test stopped it.
            started.elapsed()
        })
    };

    // The probes answer within a second each, while the idle connections are held.
    let mut slowest = Duration::ZERO;
    for path in ["/healthz", "/readyz", "/metrics"].iter().cycle().take(9) {
        let asked = Instant::now();
        let (code, _) = request(addr, path, "");
        let took = asked.elapsed();
        assert!(
            matches!(code, 200 | 503),
            "{path} answered {code} under {IDLE} idle connections"
        );
        assert!(
            took < Duration::from_secs(1),
            "{path} took {took:?} under {IDLE} idle connections"
        );
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("the slowest probe took {slowest:?}");
    assert!(
        opened.elapsed() < header_timeout,
        "the probes ran while the idle connections were open"
    );

    // Beyond the cap, the server made room by closing the oldest idle connections; within the
    // header timeout after they were opened, it closes every one, however a client trickles.
    let still_open = idle.iter().filter(|s| !closed_by_server(s)).count();
    assert!(
        still_open <= cap,
        "{still_open} idle connections open at once, over the cap of {cap}"
    );
    let deadline = opened + header_timeout + Duration::from_secs(2);
    loop {
        let open = idle.iter().filter(|s| !closed_by_server(s)).count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} idle connections still open {:?} after they were opened (header timeout \
             {header_timeout:?})",
            opened.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let trickled = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
    });
    let slow = slowloris.join().unwrap();
    trickled.join().unwrap();
    assert!(
        slow < header_timeout + Duration::from_secs(3),
        "the slow header was written to for {slow:?}: not closed at the header timeout"
    );
    // And the endpoint still serves.
    assert_eq!(request(addr, "/healthz", "").0, 200);
}

#[test]
fn status_shows_the_config_only_with_the_status_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let token = StatusToken::read(&file).unwrap();
    assert!(
        !format!("{token:?}").contains(TOKEN),
        "the token never shows in Debug"
    );
    let server = server(HttpLimits::default(), Some(token));
    let addr = server.addr();

    // Without a token: the state, not the config.
    let (code, body) = request(addr, "/status", "");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["routing"], "native");
    assert!(status.get("in_flight").is_some(), "{body}");
    assert!(status.get("config").is_none(), "{body}");
    for hidden in [BROKERS, SECRET_PATH, "sasl.password"] {
        assert!(
            !body.contains(hidden),
            "{hidden} shown without the token: {body}"
        );
    }

    // With it: the config too.
    let (code, body) = request(
        addr,
        "/status",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let config = status["config"].as_str().unwrap();
    assert!(
        config.contains(BROKERS) && config.contains(SECRET_PATH),
        "{config}"
    );

    // A wrong token, or another scheme, is refused and shows nothing.
    for wrong in [
        format!("Authorization: Bearer {TOKEN}x\r\n"),
        "Authorization: Bearer \r\n".to_owned(),
        format!("Authorization: Basic {TOKEN}\r\n"),
    ] {
        let (code, body) = request(addr, "/status", &wrong);
        assert_eq!(code, 401, "{wrong:?}: {body}");
        assert!(!body.contains(BROKERS), "{body}");
    }
}

#[test]
fn without_a_configured_token_status_never_shows_the_config() {
    let server = server(HttpLimits::default(), None);
    let addr = server.addr();
    let (code, body) = request(addr, "/status", "");
    assert_eq!(code, 200);
    assert!(!body.contains(BROKERS), "{body}");
    let (code, body) = request(
        addr,
        "/status",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("http.status_token_file"), "{body}");
    assert!(!body.contains(BROKERS), "{body}");
}

#[test]
fn a_status_token_file_that_is_short_or_unreadable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "hunter2\n").unwrap();
    let error = StatusToken::read(&short).unwrap_err();
    assert!(error.contains("at least 16"), "{error}");
    assert!(
        !error.contains("hunter2"),
        "the token is never shown: {error}"
    );
    let spaced = dir.path().join("spaced");
    std::fs::write(&spaced, "a token with spaces in it\n").unwrap();
    assert!(
        StatusToken::read(&spaced)
            .unwrap_err()
            .contains("printable")
    );
    let missing = dir.path().join("missing");
    assert!(
        StatusToken::read(&missing)
            .unwrap_err()
            .contains("cannot read")
    );
}
