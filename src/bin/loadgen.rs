//! `loadgen`: a gRPC load generator for user-service. N concurrent callers
//! share M HTTP/2 connections and call GetUser, CreateUser (unique ids), a
//! mix of both, UpdateUser, RefreshUser or BatchGetUsers, for a duration or a number of calls, each with a deadline. Prints
//! throughput, latency percentiles and counts per status code; exits 1 when
//! any call ended in a code not allowed by `--allow`. It talks only to
//! `--addr` and stops by itself.
//!
//! The calls themselves go over raw HTTP/2 (the h2 crate) with request
//! headers built once and pre-encoded GetUser bodies: through tonic's
//! Channel the generator spent as much CPU per call as the service, so its
//! rows measured itself (bench/RESULTS.md). Preloading still uses tonic.

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use prost::{
    Message,
    bytes::{BufMut, Bytes, BytesMut},
};
use tonic::{Code, transport::Endpoint};
use user_service::pb::user::v1::{
    BatchGetUsersRequest, CreateUserRequest, GetUserRequest, RefreshUserRequest, UpdateUserRequest,
    User, user_service_client::UserServiceClient,
};

/// Which RPCs to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// GetUser of ids created before the run (see --preload).
    Get,
    /// CreateUser with a unique id per call.
    Create,
    /// Both; --get-percent of calls are GetUser.
    Mix,
    /// UpdateUser (a new name, no etag) of preloaded ids.
    Update,
    /// RefreshUser (--ttl) of preloaded ids.
    Refresh,
    /// BatchGetUsers of --batch distinct preloaded ids per call.
    Batch,
}

/// Command line of the load generator.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "gRPC load generator for user-service")]
struct Args {
    /// Server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Concurrent callers.
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, short = 'm', default_value_t = 4)]
    connections: usize,
    /// Run for this many seconds (ignored when --requests is set).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many calls in total.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// What to call.
    #[arg(long, value_enum, default_value_t = Mode::Get)]
    mode: Mode,
    /// Percentage of GetUser calls in --mode mix.
    #[arg(long, default_value_t = 50)]
    get_percent: u8,
    /// Per-call deadline in milliseconds (sent as grpc-timeout).
    #[arg(long, default_value_t = 1000)]
    deadline_ms: u64,
    /// Users created before a get/mix run for GetUser to read.
    #[arg(long, default_value_t = 1000)]
    preload: u64,
    /// ttl_seconds of created users.
    #[arg(long, default_value_t = 600)]
    ttl: u32,
    /// Ids per BatchGetUsers call in --mode batch (1-100).
    #[arg(long, default_value_t = 10)]
    batch: u64,
    /// Prefix of generated ids (default: a per-run prefix, so runs never collide).
    #[arg(long)]
    id_prefix: Option<String>,
    /// Status codes that do not count as failures, comma-separated (e.g. Unavailable,DeadlineExceeded).
    #[arg(long, value_delimiter = ',')]
    allow: Vec<String>,
    /// Write every call as `id,method,code,start_unix_us,end_unix_us` to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Runtime threads of the load generator itself. One keeps it as light as
    /// h2load and redis-benchmark (both single-threaded), so on a small machine
    /// it does not take the cores the service under test needs.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// One finished call.
struct Call {
    id: u64,
    get: bool,
    code: Code,
    start_us: u64,
    end_us: u64,
}

/// Shared run state: the call counter that hands out ids and stops the run.
struct Plan {
    next: AtomicU64,
    limit: Option<u64>,
    until: Instant,
}

impl Plan {
    /// The next call's sequence number, or `None` when the run is over.
    fn take(&self) -> Option<u64> {
        if Instant::now() >= self.until {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match self.limit {
            Some(limit) if n >= limit => None,
            _ => Some(n),
        }
    }
}

fn unix_us(epoch: (Instant, u64), at: Instant) -> u64 {
    epoch.1 + at.duration_since(epoch.0).as_micros() as u64
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.connections == 0 {
        bail!("--concurrency and --connections must be at least 1");
    }
    let allowed: Vec<Code> = args
        .allow
        .iter()
        .map(|name| parse_code(name).with_context(|| format!("unknown status code {name:?}")))
        .collect::<anyhow::Result<_>>()?;
    let prefix = args.id_prefix.clone().unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("lg{:x}", nanos & 0xffff_ffff_ffff)
    });

    let endpoint = Endpoint::from_shared(format!("http://{}", args.addr))
        .context("invalid --addr")?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3));
    let deadline = Duration::from_millis(args.deadline_ms);
    if args.mode != Mode::Create && args.preload > 0 {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", args.addr))?;
        preload(
            &UserServiceClient::new(channel),
            &prefix,
            args.preload,
            args.ttl,
            deadline,
        )
        .await?;
    }
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(connect_h2(&args.addr).await?);
    }
    let raw = Arc::new(RawCalls::new(&args.addr, deadline)?);
    // Every GetUser body of the run, encoded once.
    let get_bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..args.preload)
            .map(|id| {
                grpc_frame(&GetUserRequest {
                    id: format!("{prefix}-p{id}"),
                })
            })
            .collect(),
    );

    let epoch = (
        Instant::now(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock before 1970")?
            .as_micros() as u64,
    );
    let started = Instant::now();
    let plan = Arc::new(Plan {
        next: AtomicU64::new(0),
        limit: args.requests,
        until: if args.requests.is_some() {
            started + Duration::from_secs(24 * 3600)
        } else {
            started + Duration::from_secs_f64(args.duration)
        },
    });
    let record = args.record.is_some();
    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let mut sender = senders[worker % senders.len()].clone();
        let (raw, get_bodies) = (raw.clone(), get_bodies.clone());
        let plan = plan.clone();
        let prefix = prefix.clone();
        let (mode, get_percent, preloaded, ttl, batch) = (
            args.mode,
            args.get_percent,
            args.preload,
            args.ttl,
            args.batch,
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut codes: BTreeMap<i32, u64> = BTreeMap::new();
            let mut calls = Vec::new();
            while let Some(n) = plan.take() {
                let get = match mode {
                    Mode::Get | Mode::Batch => true,
                    Mode::Create | Mode::Update | Mode::Refresh => false,
                    Mode::Mix => (n % 100) < u64::from(get_percent),
                };
                let t0 = Instant::now();
                let preloaded_id = |k: u64| format!("{prefix}-p{}", k % preloaded.max(1));
                let (id, code) = if mode == Mode::Update {
                    let body = grpc_frame(&UpdateUserRequest {
                        user: Some(User {
                            id: preloaded_id(n),
                            name: format!("Load Test {n}"),
                            email: String::new(),
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["name".into()],
                        }),
                        etag: String::new(),
                    });
                    (n, raw.call(&mut sender, &raw.update, body).await)
                } else if mode == Mode::Refresh {
                    let body = grpc_frame(&RefreshUserRequest {
                        id: preloaded_id(n),
                        ttl_seconds: Some(ttl),
                    });
                    (n, raw.call(&mut sender, &raw.refresh, body).await)
                } else if mode == Mode::Batch {
                    let body = grpc_frame(&BatchGetUsersRequest {
                        ids: (0..batch).map(|k| preloaded_id(n * batch + k)).collect(),
                    });
                    (n, raw.call(&mut sender, &raw.batch, body).await)
                } else if get && preloaded > 0 {
                    let id = n % preloaded;
                    let body = get_bodies[id as usize].clone();
                    (id, raw.call(&mut sender, &raw.get, body).await)
                } else {
                    let body = grpc_frame(&CreateUserRequest {
                        id: format!("{prefix}-{n}"),
                        name: format!("Load Test {n}"),
                        email: format!("user{n}@example.com"),
                        ttl_seconds: Some(ttl),
                    });
                    (n, raw.call(&mut sender, &raw.create, body).await)
                };
                let t1 = Instant::now();
                latencies.push(t1.duration_since(t0).as_micros() as u32);
                *codes.entry(code as i32).or_default() += 1;
                if record {
                    calls.push(Call {
                        id,
                        get,
                        code,
                        start_us: unix_us(epoch, t0),
                        end_us: unix_us(epoch, t1),
                    });
                }
            }
            (latencies, codes, calls)
        }));
    }

    let mut latencies = Vec::new();
    let mut codes: BTreeMap<i32, u64> = BTreeMap::new();
    let mut calls = Vec::new();
    for worker in workers {
        let (l, c, r) = worker.await.context("a caller panicked")?;
        latencies.extend(l);
        for (code, count) in c {
            *codes.entry(code).or_default() += count;
        }
        calls.extend(r);
    }
    let elapsed = started.elapsed();

    if let Some(path) = &args.record {
        write_record(path, &prefix, &calls)?;
    }

    latencies.sort_unstable();
    let total = latencies.len() as u64;
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        f64::from(latencies[rank.clamp(1, latencies.len()) - 1]) / 1000.0
    };
    let rate = total as f64 / elapsed.as_secs_f64();
    let failed: u64 = codes
        .iter()
        .filter(|(code, _)| {
            let code = Code::from_i32(**code);
            code != Code::Ok && !allowed.contains(&code)
        })
        .map(|(_, n)| n)
        .sum();
    let code_list: Vec<(String, u64)> = codes
        .iter()
        .map(|(code, n)| (format!("{:?}", Code::from_i32(*code)), *n))
        .collect();

    if args.json {
        let codes_json: serde_json::Map<String, serde_json::Value> = code_list
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "calls": total, "seconds": elapsed.as_secs_f64(), "rate": rate,
                "p50_ms": pct(50.0), "p90_ms": pct(90.0), "p99_ms": pct(99.0), "p999_ms": pct(99.9),
                "codes": codes_json, "failed": failed, "id_prefix": prefix,
            })
        );
    } else {
        println!(
            "calls {total} in {:.2}s: {rate:.0}/s  (mode {:?}, {} callers over {} connections)",
            elapsed.as_secs_f64(),
            args.mode,
            args.concurrency,
            args.connections
        );
        println!(
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}",
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(99.9)
        );
        let listed: Vec<String> = code_list.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("codes: {}", listed.join(", "));
        println!("id prefix: {prefix}");
    }
    if failed > 0 {
        eprintln!("loadgen: {failed} calls failed with a code not allowed by --allow");
        std::process::exit(1);
    }
    Ok(())
}

/// Opens one HTTP/2 connection; its driver runs as a task of its own.
async fn connect_h2(addr: &str) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = h2::client::handshake(tcp)
        .await
        .with_context(|| format!("HTTP/2 handshake with {addr} failed"))?;
    // A broken connection fails every call on it, which the summary counts.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A protobuf message as one length-prefixed, uncompressed gRPC message.
fn grpc_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer of the message's own length cannot run out of room.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// What every raw call shares: the two paths and the request headers, built once.
struct RawCalls {
    get: Uri,
    create: Uri,
    update: Uri,
    refresh: Uri,
    batch: Uri,
    headers: HeaderMap,
    deadline: Duration,
}

impl RawCalls {
    fn new(addr: &str, deadline: Duration) -> anyhow::Result<Self> {
        let uri = |method: &str| -> anyhow::Result<Uri> {
            format!("http://{addr}/user.v1.UserService/{method}")
                .parse()
                .context("invalid --addr")
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert(
            "grpc-timeout",
            HeaderValue::from_str(&format!("{}m", deadline.as_millis()))?,
        );
        Ok(Self {
            get: uri("GetUser")?,
            create: uri("CreateUser")?,
            update: uri("UpdateUser")?,
            refresh: uri("RefreshUser")?,
            batch: uri("BatchGetUsers")?,
            headers,
            deadline,
        })
    }

    /// One unary call: headers, the body, then the status from the
    /// trailers (or from the headers of a trailers-only answer). Like the
    /// tonic client it replaces, it stops waiting at the deadline (CANCELLED,
    /// as tonic reports its own timer) and counts a transport failure as
    /// UNAVAILABLE, so a frozen service cannot hang a run.
    async fn call(
        &self,
        sender: &mut h2::client::SendRequest<Bytes>,
        uri: &Uri,
        body: Bytes,
    ) -> Code {
        match tokio::time::timeout(self.deadline, self.try_call(sender, uri, body)).await {
            Ok(Ok(code)) => code,
            Ok(Err(_)) => Code::Unavailable,
            Err(_) => Code::Cancelled,
        }
    }

    async fn try_call(
        &self,
        sender: &mut h2::client::SendRequest<Bytes>,
        uri: &Uri,
        body: Bytes,
    ) -> Result<Code, h2::Error> {
        std::future::poll_fn(|cx| sender.poll_ready(cx)).await?;
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = self.headers.clone();
        let (response, mut stream) = sender.send_request(request, false)?;
        stream.send_data(body, true)?;
        let response = response.await?;
        if let Some(code) = grpc_status(response.headers()) {
            return Ok(code);
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            body.flow_control().release_capacity(chunk.len())?;
        }
        Ok(body
            .trailers()
            .await?
            .as_ref()
            .and_then(grpc_status)
            .unwrap_or(Code::Unknown))
    }
}

/// The `grpc-status` of a header block, when it has one.
fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from_i32)
}

/// Creates the users a GetUser run reads.
async fn preload(
    client: &UserServiceClient<tonic::transport::Channel>,
    prefix: &str,
    count: u64,
    ttl: u32,
    deadline: Duration,
) -> anyhow::Result<()> {
    let mut client = client.clone();
    for n in 0..count {
        let mut request = tonic::Request::new(CreateUserRequest {
            id: format!("{prefix}-p{n}"),
            name: format!("Preloaded {n}"),
            email: format!("pre{n}@example.com"),
            ttl_seconds: Some(ttl),
        });
        request.set_timeout(deadline);
        match client.create_user(request).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => bail!("preloading user {n} failed: {status}"),
        }
    }
    Ok(())
}

fn parse_code(name: &str) -> Option<Code> {
    (0..=16)
        .map(Code::from_i32)
        .find(|code| format!("{code:?}").eq_ignore_ascii_case(name.trim()))
}

fn write_record(path: &PathBuf, prefix: &str, calls: &[Call]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "id,method,code,start_unix_us,end_unix_us")?;
    for call in calls {
        let (id, method) = if call.get {
            (format!("{prefix}-p{}", call.id), "GetUser")
        } else {
            (format!("{prefix}-{}", call.id), "CreateUser")
        };
        writeln!(
            out,
            "{id},{method},{:?},{},{}",
            call.code, call.start_us, call.end_us
        )?;
    }
    out.flush()?;
    Ok(())
}
