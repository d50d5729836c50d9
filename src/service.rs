//! The `user.v1.UserService` implementation: admit the call, validate the
//! request into domain types, call the store inside the call's time budget,
//! and turn the outcome into a response. It never builds Redis commands.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{Semaphore, SemaphorePermit};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    domain::{self, NewUser, TtlPolicy, UserFieldsIn, UserUpdate},
    error::ServiceError,
    pb::user::v1::{
        BatchGetUsersRequest, BatchGetUsersResponse, CreateUserRequest, CreateUserResponse,
        DeleteUserRequest, DeleteUserResponse, GetUserRequest, GetUserResponse, RefreshUserRequest,
        RefreshUserResponse, UpdateUserRequest, UpdateUserResponse, User, WatchUsersRequest,
        user_service_server::UserService,
    },
    store::{Change, CreateOutcome, StoredUser, UserStore},
    watch::WatchStream,
};

/// Longest a WatchUsers call waits for the keyspace subscription to be
/// active (the first watch starts it and probes Redis's notifications),
/// unless the caller's deadline is sooner.
const WATCH_START_WAIT: Duration = Duration::from_secs(5);

/// Default of WATCH_MAX_STREAMS.
pub const DEFAULT_MAX_WATCH_STREAMS: usize = 1000;

/// Time kept back from the caller's deadline so our answer reaches it before
/// its own timer fires (tonic clients then report CANCELLED, not
/// DEADLINE_EXCEEDED); 5 ms proved too little on a loaded machine.
const DEADLINE_MARGIN: Duration = Duration::from_millis(25);

/// Longest a call waits for a free slot before RESOURCE_EXHAUSTED (less if
/// its budget ends sooner). Long enough to ride out a burst (a slot frees
/// in about a call's latency, ~1 ms), short enough that a caller learns of
/// a real overload quickly and can retry elsewhere.
const ADMISSION_WAIT: Duration = Duration::from_millis(100);

/// The UserService handler; cheap to clone.
#[derive(Clone)]
pub struct UserApi {
    store: UserStore,
    ttl: TtlPolicy,
    redis_timeout: Duration,
    // A semaphore rather than a server-wide tower limit so that health and
    // reflection still answer while UserService is saturated.
    slots: Arc<Semaphore>,
    /// Open WatchUsers streams (WATCH_MAX_STREAMS).
    watch_slots: Arc<Semaphore>,
}

/// When a request reached the service, stamped by [`stamp_arrival`].
#[derive(Debug, Clone, Copy)]
pub struct Arrival(Instant);

/// Interceptor that records when a call arrived.
///
/// It runs in the same synchronous `call` in which tonic starts its own
/// `grpc-timeout` timer, so budgets measured from here end just before
/// tonic's timer would answer CANCELLED; measuring from the handler's
/// start instead loses the time the request waited to be scheduled.
pub fn stamp_arrival(mut request: Request<()>) -> Result<Request<()>, Status> {
    request.extensions_mut().insert(Arrival(Instant::now()));
    Ok(request)
}

/// Until when a call may spend on Redis, and which limit that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Budget {
    until: Instant,
    set_by_caller: bool,
}

impl Budget {
    /// The earlier of the service's Redis budget and the caller's `grpc-timeout`,
    /// both counted from the call's arrival.
    fn for_request<T>(request: &Request<T>, redis_timeout: Duration) -> Self {
        let arrival = request
            .extensions()
            .get::<Arrival>()
            .map_or_else(Instant::now, |a| a.0);
        let caller = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|t| t.saturating_sub(DEADLINE_MARGIN.min(t / 10)));
        match caller {
            Some(caller) if caller < redis_timeout => Self {
                until: arrival + caller,
                set_by_caller: true,
            },
            _ => Self {
                until: arrival + redis_timeout,
                set_by_caller: false,
            },
        }
    }

    /// Runs `work` within the budget.
    async fn run<T, E>(self, work: impl Future<Output = Result<T, E>>) -> Result<T, ServiceError>
    where
        ServiceError: From<E>,
    {
        match tokio::time::timeout_at(self.until.into(), work).await {
            Ok(result) => result.map_err(ServiceError::from),
            Err(_) if self.set_by_caller => Err(ServiceError::DeadlineExceeded),
            Err(_) => Err(ServiceError::RedisTimeout),
        }
    }
}

/// Parses a gRPC `grpc-timeout` header value: up to 8 digits and a unit (H M S m u n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

impl UserApi {
    /// A handler over `store` with the given expiry policy, Redis budget and concurrency limit.
    pub fn new(
        store: UserStore,
        ttl: TtlPolicy,
        redis_timeout: Duration,
        max_concurrent: usize,
    ) -> Self {
        Self {
            store,
            ttl,
            redis_timeout,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            watch_slots: Arc::new(Semaphore::new(DEFAULT_MAX_WATCH_STREAMS)),
        }
    }

    /// Allows at most `max` WatchUsers streams open at once.
    pub fn with_max_watch_streams(mut self, max: usize) -> Self {
        self.watch_slots = Arc::new(Semaphore::new(max));
        self
    }

    /// Runs one call: admission, a span with method, user id, status and
    /// latency, and the one report of a failure (`calls::failed`). The
    /// call is counted and timed by the `calls` layer around the server.
    async fn call<T>(
        &self,
        method: &'static str,
        id: &str,
        budget: Budget,
        work: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<Response<T>, Status> {
        // Ids are logged escaped: a hostile id must not forge log lines.
        let span = tracing::debug_span!("rpc", method, user.id = %id.escape_debug());
        async {
            let started = Instant::now();
            let result = match admit(&self.slots, budget.until).await {
                Some(_permit) => work.await,
                None => Err(ServiceError::Overloaded),
            };
            if let Err(err) = &result {
                crate::calls::failed(method, err);
            }
            let result = result.map(Response::new).map_err(Status::from);
            let code = match &result {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            };
            let latency = started.elapsed();
            tracing::debug!(code = ?code, latency_us = latency.as_micros() as u64, "call done");
            result
        }
        .instrument(span)
        .await
    }
}

/// A slot for one call: at once if one is free, else the first to free up
/// within `ADMISSION_WAIT` or before `until` (the call's budget), whichever
/// ends first (tokio's semaphore is fair: waiters are served in order).
async fn admit(slots: &Semaphore, until: Instant) -> Option<SemaphorePermit<'_>> {
    if let Ok(permit) = slots.try_acquire() {
        return Some(permit);
    }
    let until = until.min(Instant::now() + ADMISSION_WAIT);
    tokio::time::timeout_at(until.into(), slots.acquire())
        .await
        .ok()?
        .ok()
}

#[tonic::async_trait]
impl UserService for UserApi {
    type WatchUsersStream = WatchStream;

    async fn watch_users(
        &self,
        request: Request<WatchUsersRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let budget = Budget::for_request(&request, self.redis_timeout);
        let wait = if budget.set_by_caller {
            budget.until.saturating_duration_since(Instant::now())
        } else {
            WATCH_START_WAIT
        };
        let req = request.into_inner();
        self.call("WatchUsers", &req.id_prefix, budget, async {
            let prefix = domain::parse_id_prefix(&req.id_prefix)?;
            let slot = Arc::clone(&self.watch_slots)
                .try_acquire_owned()
                .map_err(|_| ServiceError::TooManyWatches)?;
            let watch = self.store.watch(wait).await?;
            Ok(WatchStream::new(prefix, watch, slot))
        })
        .await
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let budget = Budget::for_request(&request, self.redis_timeout);
        let req = request.into_inner();
        self.call("CreateUser", &req.id, budget, async {
            let user = NewUser::parse(&req.id, &req.name, &req.email, req.ttl_seconds, self.ttl)?;
            match budget.run(self.store.create(&user, budget.until)).await? {
                CreateOutcome::AlreadyExists => Err(ServiceError::AlreadyExists),
                CreateOutcome::Created { expires_at, etag } => Ok(CreateUserResponse {
                    user: Some(User {
                        id: user.id.as_str().to_owned(),
                        name: user.name,
                        email: user.email,
                    }),
                    expire_time: Some(expires_at.into()),
                    ttl_seconds: user.ttl_seconds,
                    etag,
                }),
            }
        })
        .await
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let budget = Budget::for_request(&request, self.redis_timeout);
        let req = request.into_inner();
        self.call("GetUser", &req.id, budget, async {
            let id = domain::parse_lookup_id(&req.id)?;
            let stored = budget
                .run(self.store.get(&id))
                .await?
                .ok_or(ServiceError::NotFound)?;
            Ok(get_response(stored))
        })
        .await
    }

    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let budget = Budget::for_request(&request, self.redis_timeout);
        let req = request.into_inner();
        let id = req.user.as_ref().map_or("", |user| user.id.as_str());
        self.call("UpdateUser", id, budget, async {
            let fields = req.user.as_ref().map(|user| UserFieldsIn {
                id: &user.id,
                name: &user.name,
                email: &user.email,
            });
            let mask = req.update_mask.as_ref().map(|mask| mask.paths.as_slice());
            let update = UserUpdate::parse(fields, mask, &req.etag)?;
            let stored = changed(budget.run(self.store.update(&update)).await?)?;
            let GetUserResponse {
                user,
                expire_time,
                etag,
            } = get_response(stored);
            Ok(UpdateUserResponse {
                user,
                expire_time,
                etag,
            })
        })
        .await
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let budget = Budget::for_request(&request, self.redis_timeout);
        let req = request.into_inner();
        self.call("DeleteUser", &req.id, budget, async {
            let (id, etag) = domain::parse_delete(&req.id, &req.etag)?;
            changed(budget.run(self.store.delete(&id, etag.as_deref())).await?)?;
            Ok(DeleteUserResponse {})
        })
        .await
    }

    async fn refresh_user(
        &self,
        request: Request<RefreshUserRequest>,
    ) -> Result<Response<RefreshUserResponse>, Status> {
        let budget = Budget::for_request(&request, self.redis_timeout);
        let req = request.into_inner();
        self.call("RefreshUser", &req.id, budget, async {
            let (id, ttl_seconds) = domain::parse_refresh(&req.id, req.ttl_seconds, self.ttl)?;
            let stored = budget
                .run(self.store.refresh(&id, ttl_seconds))
                .await?
                .ok_or(ServiceError::NotFound)?;
            let GetUserResponse {
                user,
                expire_time,
                etag,
            } = get_response(stored);
            Ok(RefreshUserResponse {
                user,
                expire_time,
                ttl_seconds,
                etag,
            })
        })
        .await
    }

    async fn batch_get_users(
        &self,
        request: Request<BatchGetUsersRequest>,
    ) -> Result<Response<BatchGetUsersResponse>, Status> {
        let budget = Budget::for_request(&request, self.redis_timeout);
        let req = request.into_inner();
        // The span names the first id only: a batch is logged by its size.
        let first = req.ids.first().map_or("", String::as_str);
        self.call("BatchGetUsers", first, budget, async {
            let ids = domain::parse_batch_ids(&req.ids)?;
            let found = budget.run(self.store.batch_get(&ids)).await?;
            let mut response = BatchGetUsersResponse::default();
            for (id, user) in ids.into_iter().zip(found) {
                match user {
                    Some(stored) => response.users.push(get_response(stored)),
                    None => response.missing_ids.push(id.as_str().to_owned()),
                }
            }
            Ok(response)
        })
        .await
    }
}

/// The answer carrying a stored user, as GetUser gives it (the other RPCs
/// answer the same three fields).
fn get_response(stored: StoredUser) -> GetUserResponse {
    GetUserResponse {
        user: Some(User {
            id: stored.id,
            name: stored.name,
            email: stored.email,
        }),
        expire_time: stored.expires_at.map(Into::into),
        etag: stored.etag,
    }
}

/// The result of a change, or why there is none.
fn changed<T>(change: Change<T>) -> Result<T, ServiceError> {
    match change {
        Change::Done(result) => Ok(result),
        Change::NotFound => Err(ServiceError::NotFound),
        Change::Stale => Err(ServiceError::Aborted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999u"),
            Some(Duration::from_micros(99_999))
        );
        for bad in ["", "m", "5x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn admission_waits_for_a_slot_freed_in_time() {
        let slots = Semaphore::new(1);
        let held = slots.try_acquire().unwrap();
        let far = Instant::now() + Duration::from_secs(60);

        // The waiter queues first, then the holder lets go.
        let (admitted, ()) = tokio::join!(admit(&slots, far), async { drop(held) });

        assert!(admitted.is_some(), "a slot freed while waiting is taken");
    }

    #[tokio::test]
    async fn admission_refuses_when_the_budget_is_spent() {
        let slots = Semaphore::new(1);
        let _held = slots.try_acquire().unwrap();

        let admitted = admit(&slots, Instant::now()).await;

        assert!(admitted.is_none());
        drop(_held);
        assert!(
            admit(&slots, Instant::now()).await.is_some(),
            "a free slot is taken even with no time left"
        );
    }

    #[test]
    fn budget_takes_the_tighter_limit_from_arrival() {
        let mut request = stamp_arrival(Request::new(())).unwrap();
        let arrival = request.extensions().get::<Arrival>().unwrap().0;
        let redis = Duration::from_secs(1);
        assert_eq!(
            Budget::for_request(&request, redis),
            Budget {
                until: arrival + redis,
                set_by_caller: false
            }
        );
        request
            .metadata_mut()
            .insert("grpc-timeout", "200m".parse().unwrap());
        let budget = Budget::for_request(&request, redis);
        assert!(budget.set_by_caller);
        assert_eq!(budget.until, arrival + Duration::from_millis(180));
        request
            .metadata_mut()
            .insert("grpc-timeout", "5S".parse().unwrap());
        assert!(!Budget::for_request(&request, redis).set_by_caller);
    }
}
