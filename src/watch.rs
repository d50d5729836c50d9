//! The response stream of one WatchUsers call: a SUBSCRIBED message, then
//! the store's changes whose id starts with the caller's prefix, until the
//! watch ends (a gap, a slow reader, shutdown), which becomes the stream's
//! final status. It holds one of the WATCH_MAX_STREAMS slots while open.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::SystemTime,
};

use tokio::sync::OwnedSemaphorePermit;
use tokio_stream::Stream;
use tonic::Status;

use crate::{
    error::ServiceError,
    pb::user::v1::{WatchUsersResponse, watch_users_response::Kind},
    store::{ChangeKind, UserChange, Watch, WatchEnd},
};

/// The store's next change, with the watch handed back for the one after.
type Next = Pin<Box<dyn Future<Output = (Result<Arc<UserChange>, WatchEnd>, Watch)> + Send>>;

fn next(mut watch: Watch) -> Next {
    Box::pin(async move { (watch.next().await, watch) })
}

/// One WatchUsers stream; see the module docs.
pub struct WatchStream {
    subscribed_sent: bool,
    prefix: String,
    /// `None` once the stream has ended.
    next: Option<Next>,
    /// Frees a WATCH_MAX_STREAMS slot when the stream is dropped (ended or
    /// the client went away).
    _slot: OwnedSemaphorePermit,
}

impl WatchStream {
    /// A stream of `watch`'s changes to ids starting with `prefix`.
    pub fn new(prefix: String, watch: Watch, slot: OwnedSemaphorePermit) -> Self {
        Self {
            subscribed_sent: false,
            prefix,
            next: Some(next(watch)),
            _slot: slot,
        }
    }
}

/// The proto kind of a store change.
fn kind(kind: ChangeKind) -> Kind {
    match kind {
        ChangeKind::Put => Kind::Put,
        ChangeKind::Deleted => Kind::Deleted,
        ChangeKind::Expired => Kind::Expired,
        ChangeKind::ExpiryChanged => Kind::ExpiryChanged,
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchUsersResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.subscribed_sent {
            self.subscribed_sent = true;
            return Poll::Ready(Some(Ok(WatchUsersResponse {
                kind: Kind::Subscribed.into(),
                id: String::new(),
                event_time: Some(SystemTime::now().into()),
            })));
        }
        loop {
            let Some(pending) = self.next.as_mut() else {
                return Poll::Ready(None);
            };
            let (result, watch) = ready!(pending.as_mut().poll(cx));
            match result {
                Ok(change) => {
                    self.next = Some(next(watch));
                    if change.id.starts_with(&self.prefix) {
                        return Poll::Ready(Some(Ok(WatchUsersResponse {
                            kind: kind(change.kind).into(),
                            id: change.id.clone(),
                            event_time: Some(change.at.into()),
                        })));
                    }
                }
                Err(end) => {
                    self.next = None;
                    let err = ServiceError::WatchEnded(end);
                    crate::calls::failed("WatchUsers", &err);
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
        }
    }
}
