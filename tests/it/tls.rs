//! TLS on --tls-port, exercised with real clients: redis-cli --tls and redis-py over TLS, with
//! certificates generated for the test (a CA, a server certificate for 127.0.0.1, a client one).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use baton::config::Config;
use baton::server::RunningServer;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn generate(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("baton-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct subject names: OpenSSL takes a certificate whose subject equals its issuer's for
        // self-signed and then fails to verify it.
        ca_params.distinguished_name.push(DnType::CommonName, "baton test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        for (file, names) in [("server", vec!["localhost".to_owned(), "127.0.0.1".to_owned()]), ("client", vec![])] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, format!("baton test {file}"));
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn config(&self, require_client_certs: bool) -> Config {
        let mut config = Config::default_for_tests();
        config.tls_port = Some(0);
        config.tls_cert_file = Some(self.path("server.crt"));
        config.tls_key_file = Some(self.path("server.key"));
        if require_client_certs {
            config.tls_ca_cert_file = Some(self.path("ca.crt"));
        }
        config
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

async fn redis_cli(port: u16, tls_args: &[&str], command: &[&str]) -> Output {
    let mut cli = Command::new("redis-cli");
    cli.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(tls_args).args(command);
    tokio::task::spawn_blocking(move || {
        cli.output().expect("redis-cli must be installed (scripts/install-test-deps.sh)")
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

const REDIS_PY_TLS: &str = r#"
import sys, redis
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
extra = {"ssl_certfile": sys.argv[4], "ssl_keyfile": sys.argv[5]} if len(sys.argv) > 5 else {}
for protocol in (2, 3):
    client = redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=ca, protocol=protocol, **extra)
    reply = client.execute_command("LOCK.TRY", f"tls-key-{protocol}", "py")
    assert reply[0] in (b"ACQUIRED", "ACQUIRED"), reply
    token = reply[1]
    assert client.execute_command("LOCK.UNLOCK", f"tls-key-{protocol}", "py", token, "SUCCESS") == 0
print("redis-py tls ok")
"#;

async fn redis_py(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new("python3").arg("-c").arg(REDIS_PY_TLS).args(args).output().expect("python3 with redis-py")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_and_redis_py_over_tls() {
    let pki = Pki::generate("server-auth");
    let server = RunningServer::start(pki.config(false)).await.unwrap();
    let port = server.tls_addr.expect("TLS listener").port();
    let ca = pki.path("ca.crt");
    let tls = ["--tls", "--cacert", path_arg(&ca)];

    let ping = redis_cli(port, &tls, &["PING"]).await;
    assert_eq!(stdout(&ping), "PONG", "{ping:?}");
    let acquired = redis_cli(port, &tls, &["LOCK.TRY", "tls-key", "cli"]).await;
    assert!(stdout(&acquired).starts_with("ACQUIRED"), "{acquired:?}");

    // Plain text on the TLS port is not understood as RESP.
    let plain = redis_cli(port, &[], &["PING"]).await;
    assert_ne!(stdout(&plain), "PONG");
    // The plain port keeps working beside it.
    let plain_port = redis_cli(server.addr.port(), &[], &["PING"]).await;
    assert_eq!(stdout(&plain_port), "PONG");

    let py = redis_py(vec!["127.0.0.1".into(), port.to_string(), path_arg(&ca).into()]).await;
    assert!(py.status.success(), "redis-py over TLS failed: {}", String::from_utf8_lossy(&py.stderr));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_with_a_ca() {
    let pki = Pki::generate("client-auth");
    let server = RunningServer::start(pki.config(true)).await.unwrap();
    let port = server.tls_addr.expect("TLS listener").port();
    let (ca, cert, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));

    let anonymous = redis_cli(port, &["--tls", "--cacert", path_arg(&ca)], &["PING"]).await;
    assert_ne!(stdout(&anonymous), "PONG", "a client without a certificate must be refused");

    let with_cert = ["--tls", "--cacert", path_arg(&ca), "--cert", path_arg(&cert), "--key", path_arg(&key)];
    let ping = redis_cli(port, &with_cert, &["PING"]).await;
    assert_eq!(stdout(&ping), "PONG", "{ping:?}");

    let py = redis_py(vec![
        "127.0.0.1".into(),
        port.to_string(),
        path_arg(&ca).into(),
        path_arg(&cert).into(),
        path_arg(&key).into(),
    ])
    .await;
    assert!(py.status.success(), "redis-py with a client certificate failed: {}", String::from_utf8_lossy(&py.stderr));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_port_without_certificate_files_is_refused_at_start() {
    let mut config = Config::default_for_tests();
    config.tls_port = Some(0);
    let error = RunningServer::start(config).await.err().expect("must not start");
    assert!(error.to_string().contains("--tls-cert-file"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_0_serves_tls_only() {
    let pki = Pki::generate("tls-only");
    let mut config = pki.config(false);
    config.ephemeral_port = false;
    config.port = 0;
    let server = RunningServer::start(config).await.unwrap();
    assert_eq!(server.addr.port(), 0, "no plaintext listener");
    let port = server.tls_addr.expect("TLS listener").port();
    let ca = pki.path("ca.crt");
    let tls = ["--tls", "--cacert", path_arg(&ca)];
    let acquired = redis_cli(port, &tls, &["LOCK.TRY", "tls-only", "cli"]).await;
    assert!(stdout(&acquired).starts_with("ACQUIRED"), "{acquired:?}");
    // As Redis reports it with `port 0`.
    let info = redis_cli(port, &tls, &["INFO", "server"]).await;
    assert!(stdout(&info).lines().any(|line| line == "tcp_port:0"), "{info:?}");
    let config_port = redis_cli(port, &tls, &["CONFIG", "GET", "port"]).await;
    assert_eq!(stdout(&config_port), "port\n0");
    let plain = redis_cli(port, &[], &["LOCK.TRY", "tls-only", "plain"]).await;
    assert!(!stdout(&plain).starts_with("ACQUIRED"), "{plain:?}");
    server.stop().await.unwrap();
}
