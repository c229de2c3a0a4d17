//! `http-hello`: a `wasi:http/proxy` component, the sample of a pod that
//! serves HTTP. It answers every request `200 OK`, `text/plain`, with
//! `Hello from <POD_NAME>` (or `Hello from Kapsel` when `POD_NAME` is not
//! set). Two paths show what reaches it: `/echo-headers` lists the
//! request's headers, one `name: value` per line, and `/echo` streams the
//! request's body back as it arrives (so a request whose body stays open
//! keeps its instance busy), and `/sleep?ms=N` waits N milliseconds (at most
//! a minute) before it answers, as a slow backend would. Each request runs in a fresh instance: nothing
//! is kept between requests.

use std::io::Write as _;

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct HttpHello;

impl wasip2::exports::http::incoming_handler::Guest for HttpHello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = path_with_query.split('?').next().unwrap_or_default();
        match path {
            "/echo" => echo(request, response_out),
            "/sleep" => {
                let ms = path_with_query.split_once("ms=").and_then(|(_, n)| n.split('&').next()?.parse::<u64>().ok()).unwrap_or(1000);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms.min(60_000) * 1_000_000).block();
                respond(response_out, |out| out.write_all(b"slept\n"));
            }
            "/echo-headers" => {
                let headers = request.headers().entries();
                let text: String = headers.iter().map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value))).collect();
                respond(response_out, |out| out.write_all(text.as_bytes()));
            }
            _ => {
                let name = std::env::var("POD_NAME").unwrap_or_else(|_| "Kapsel".into());
                respond(response_out, |out| out.write_all(format!("Hello from {name}\n").as_bytes()));
            }
        }
    }
}

/// Answers 200, `text/plain`, with the body `write` writes.
fn respond(response_out: ResponseOutparam, write: impl FnOnce(&mut wasip2::io::streams::OutputStream) -> std::io::Result<()>) {
    let headers = Fields::new();
    // Appending an allowed header to fresh fields cannot fail.
    let _ = headers.append("content-type", b"text/plain; charset=utf-8");
    let response = OutgoingResponse::new(headers);
    let Ok(body) = response.body() else { return };
    ResponseOutparam::set(response_out, Ok(response));
    let Ok(mut out) = body.write() else { return };
    // A failed write means the client went away: there is nobody to tell.
    let written = write(&mut out).and_then(|()| std::io::Write::flush(&mut out));
    drop(out);
    if written.is_ok() {
        let _ = OutgoingBody::finish(body, None);
    }
}

/// Streams the request's body back as the response's.
fn echo(request: IncomingRequest, response_out: ResponseOutparam) {
    let Ok(incoming) = request.consume() else { return };
    let Ok(mut stream) = incoming.stream() else { return };
    respond(response_out, |out| std::io::copy(&mut stream, out).map(drop));
    // The stream goes before the body it belongs to.
    drop(stream);
    drop(incoming);
}

wasip2::http::proxy::export!(HttpHello);
