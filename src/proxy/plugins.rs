//! The response side of the plugin pipeline: early exits, `header_filter`, `body_filter` on each
//! chunk as the body streams, and `log` once the response is done (never delaying it).

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::body::{ProxyBody, boxed, error_page, full};
use crate::plugin::{Chain, Phase, PluginError, ReqBody, RequestState, Vm, enter, scoped};
use crate::upstream::pool::BoxError;

/// One request's plugin chain on its worker VM.
pub(crate) struct PluginRun {
    pub(crate) vm: Rc<Vm>,
    pub(crate) chain: Rc<Chain>,
    /// The request's `ctx`, set up by the first phase that runs Lua.
    pub(crate) ctx: Option<mlua::Table>,
    pub(crate) state: Rc<RequestState>,
}

impl Drop for PluginRun {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            self.vm.release_ctx(ctx);
        }
    }
}

/// Runs one request-side phase of `chain` (these may yield), if it has that phase. `Ok(true)` means
/// a plugin ended the request.
async fn run_phase(
    vm: &Vm,
    state: &Rc<RequestState>,
    chain: &Chain,
    ctx: &mut Option<mlua::Table>,
    phase: Phase,
) -> Result<bool, PluginError> {
    state.phase.set(phase);
    let Some(runner) = chain.runner(phase) else {
        return Ok(false);
    };
    scoped(state, vm.run_phase(runner, ctx)).await
}

/// Runs one response-side phase of `chain` (these never yield, as in OpenResty), if it has it.
fn run_phase_now(
    vm: &Vm,
    state: &Rc<RequestState>,
    chain: &Chain,
    ctx: &mut Option<mlua::Table>,
    phase: Phase,
) -> Result<(), PluginError> {
    state.phase.set(phase);
    let Some(runner) = chain.runner(phase) else {
        return Ok(());
    };
    enter(state, || vm.run_phase_now(runner, ctx))
}

impl PluginRun {
    /// Runs one request-side phase; `Ok(true)` means a plugin ended the request.
    pub(crate) async fn phase(&mut self, phase: Phase) -> Result<bool, PluginError> {
        run_phase(&self.vm, &self.state, &self.chain, &mut self.ctx, phase).await
    }

    /// `rewrite`, then the plugins of a consumer that `rewrite` authenticated join the chain (their
    /// own `rewrite` runs, APISIX's `rewrite_in_consumer`), then `access`. `Ok(true)` means a plugin
    /// ended the request.
    pub(crate) async fn rewrite_and_access(&mut self) -> Result<bool, PluginError> {
        if self.phase(Phase::Rewrite).await? || self.merge_consumer().await? {
            return Ok(true);
        }
        self.phase(Phase::Access).await
    }

    /// Runs one response-side phase.
    fn phase_now(&mut self, phase: Phase) -> Result<(), PluginError> {
        run_phase_now(&self.vm, &self.state, &self.chain, &mut self.ctx, phase)
    }

    /// Only a `rewrite` can authenticate a consumer: without a ctx no `rewrite` ran, and nothing is
    /// merged.
    async fn merge_consumer(&mut self) -> Result<bool, PluginError> {
        let Some(ctx) = &self.ctx else {
            return Ok(false);
        };
        let merged =
            crate::plugin::enter(&self.state, || self.vm.merge_consumer(&self.chain, ctx))?;
        let Some((merged, added)) = merged else {
            return Ok(false);
        };
        self.chain = merged;
        run_phase(&self.vm, &self.state, &added, &mut self.ctx, Phase::Rewrite).await
    }

    /// Takes the (possibly rewritten) request out for forwarding. The head comes back with
    /// [`PluginRun::return_head`] before the response-side phases.
    pub(crate) fn take_request(&self) -> (http::request::Parts, ReqBody) {
        let body = std::mem::replace(&mut *self.state.body.borrow_mut(), ReqBody::Reading);
        let placeholder = http::Request::new(()).into_parts().0;
        let parts = std::mem::replace(&mut *self.state.parts.borrow_mut(), placeholder);
        (parts, body)
    }

    /// Puts back the request head that [`PluginRun::take_request`] took, unchanged by forwarding.
    pub(crate) fn return_head(&self, head: http::request::Parts) {
        *self.state.parts.borrow_mut() = head;
    }

    /// The response a plugin asked for with `return code, body` or `core.response.exit`.
    pub(crate) fn exit_response(self) -> Response<ProxyBody> {
        let (status, body) = {
            let mut resp = self.state.resp.borrow_mut();
            let status = resp.exit.or(resp.status).unwrap_or(200);
            let body = match resp.stream.take() {
                Some(stream) => Some(boxed(stream)),
                None if resp.out.is_empty() => None,
                None => Some(full(std::mem::take(&mut resp.out).freeze())),
            };
            (status, body)
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let response = match body {
            Some(body) => {
                let mut response = Response::new(body);
                *response.status_mut() = status;
                response
            }
            // An error without a body of its own gets the error page, as nginx's ngx.exit gives.
            None if status.as_u16() >= 400 => error_page(status),
            None => {
                let mut response = Response::new(full(bytes::Bytes::new()));
                *response.status_mut() = status;
                response
            }
        };
        self.finish(response)
    }

    /// A plugin raised: the request fails with 500, and only this request.
    pub(crate) fn error_response(self, err: PluginError) -> Response<ProxyBody> {
        tracing::error!(route_id = %self.state.route.id, phase = self.state.phase.get().name(), error = %err, "plugin failed");
        self.state.resp.borrow_mut().headers.clear();
        self.finish(error_page(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// Runs `header_filter` on the response head, then wraps the body for `body_filter` and `log`.
    pub(crate) fn finish(mut self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let (mut head, body) = response.into_parts();
        {
            let mut resp = self.state.resp.borrow_mut();
            // Headers set by plugins before the response existed apply to it, replacing the upstream's.
            if !resp.headers.is_empty() {
                let plugin_set = std::mem::take(&mut resp.headers);
                for name in plugin_set.keys() {
                    head.headers.remove(name);
                }
                for (name, value) in plugin_set.iter() {
                    head.headers.append(name.clone(), value.clone());
                }
            }
            // Swapped, here and below: the maps change hands without an empty one made or dropped.
            std::mem::swap(&mut resp.headers, &mut head.headers);
            resp.status = Some(head.status.as_u16());
        }
        if let Err(err) = self.phase_now(Phase::HeaderFilter) {
            tracing::error!(route_id = %self.state.route.id, phase = "header_filter", error = %err, "plugin failed");
            let mut resp = self.state.resp.borrow_mut();
            resp.status = Some(500);
            resp.headers = HeaderMap::new();
        }
        {
            let mut resp = self.state.resp.borrow_mut();
            resp.sent = true;
            head.status = resp
                .status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(head.status);
            std::mem::swap(&mut head.headers, &mut resp.headers);
        }
        let filter = self.chain.has(Phase::BodyFilter);
        if !filter && !self.chain.has(Phase::Log) {
            return Response::from_parts(head, body);
        }
        if filter {
            // The filters may change the body, so its length is no longer known.
            head.headers.remove(header::CONTENT_LENGTH);
        }
        let body = FilteredBody {
            inner: body,
            run: Some(self),
            filter,
            done: false,
        };
        Response::from_parts(head, Box::pin(body))
    }
}

/// Runs the `log` phase on its own task, after the response.
fn spawn_log(mut run: PluginRun) {
    if !run.chain.has(Phase::Log) {
        return;
    }
    tokio::task::spawn_local(async move {
        if let Err(err) = run.phase_now(Phase::Log) {
            tracing::error!(route_id = %run.state.route.id, phase = "log", error = %err, "plugin failed");
        }
    });
}

/// A response body that passes each chunk through the `body_filter`s and runs `log` at its end.
struct FilteredBody {
    inner: ProxyBody,
    run: Option<PluginRun>,
    filter: bool,
    done: bool,
}

impl FilteredBody {
    fn filter_chunk(&mut self, chunk: Bytes, eof: bool) -> Result<Bytes, BoxError> {
        let Some(run) = &mut self.run else {
            return Ok(chunk);
        };
        let Some(runner) = run.chain.runner(Phase::BodyFilter) else {
            return Ok(chunk);
        };
        run.state.phase.set(Phase::BodyFilter);
        let result = enter(&run.state, || {
            run.vm.run_body_filter(runner, &mut run.ctx, chunk, eof)
        });
        result.map_err(|err| {
            tracing::error!(route_id = %run.state.route.id, phase = "body_filter", error = %err, "plugin failed");
            Box::new(err) as BoxError
        })
    }

    fn complete(&mut self) {
        self.done = true;
        if let Some(run) = self.run.take() {
            spawn_log(run);
        }
    }
}

impl Drop for FilteredBody {
    fn drop(&mut self) {
        // A client that went away still gets its request logged.
        if let Some(run) = self.run.take() {
            spawn_log(run);
        }
    }
}

impl Body for FilteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match self.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = self.filter_chunk(data, false)?;
                        if out.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(err))) => {
                    self.complete();
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => {
                    let last = if self.filter {
                        self.filter_chunk(Bytes::new(), true)
                    } else {
                        Ok(Bytes::new())
                    };
                    self.complete();
                    return match last {
                        Ok(bytes) if bytes.is_empty() => Poll::Ready(None),
                        Ok(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                        Err(err) => Poll::Ready(Some(Err(err))),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Never report the end early: the final body_filter call and the log phase run at the end.
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.filter {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
