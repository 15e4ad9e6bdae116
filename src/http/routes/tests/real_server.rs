//! A real actix server on port 0 around the fake backend: raw sockets
//! (declared and chunked oversize bodies) and reqwest.

use super::*;

/// Starts a real server on port 0 around `backend`; returns its address.
fn serve(backend: web::Data<Fake>) -> std::net::SocketAddr {
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .app_data(backend.clone())
            .configure(configure_for::<Fake>)
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    addr
}

/// Sends a raw HTTP/1.1 request (head, then body chunks, ignoring write
/// errors once the server stopped reading) and returns the response head
/// and body as text.
async fn raw(addr: std::net::SocketAddr, head: String, chunks: Vec<Vec<u8>>) -> String {
    use std::io::{Read, Write};
    web::block(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        for c in chunks {
            if s.write_all(&c).is_err() {
                break;
            }
        }
        // Read until the response's head and its Content-Length body are in
        // (the server may keep the connection open afterwards).
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !response_complete(&out) {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

fn response_complete(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let len = text[..head_end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    out.len() >= head_end + 4 + len
}

/// Content type, opening and closing of a one-file multipart body.
fn multipart_parts() -> (String, Vec<u8>, Vec<u8>) {
    let boundary = "XyZboundary42";
    let pre = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
    )
    .into_bytes();
    let post = format!("\r\n--{boundary}--\r\n").into_bytes();
    (
        format!("multipart/form-data; boundary={boundary}"),
        pre,
        post,
    )
}

#[actix_web::test]
async fn real_server_answers_413_to_declared_and_chunked_oversize() {
    let mut f = fake(|| Ok(transcript()));
    f.config.max_upload_bytes = 100_000;
    let addr = serve(web::Data::new(f));
    let (ct, pre, post) = multipart_parts();
    let file = vec![0u8; 2_000_000];

    // Declared too large: answered before the body is read.
    let len = pre.len() + file.len() + post.len();
    let head = format!(
        "POST {TRANSCRIPTIONS_ROUTE} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\n\r\n"
    );
    let res = raw(addr, head, vec![pre.clone(), file.clone(), post.clone()]).await;
    assert!(
        res.starts_with("HTTP/1.1 413"),
        "got: {}",
        &res[..res.len().min(300)]
    );
    assert!(res.contains("upload_too_large"));

    // Chunked, no length: refused once the counted body passes the limit.
    let head = format!(
        "POST {TRANSCRIPTIONS_ROUTE} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut chunks = vec![];
    for piece in std::iter::once(pre)
        .chain(file.chunks(16 * 1024).map(<[u8]>::to_vec))
        .chain(std::iter::once(post))
    {
        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
        c.extend_from_slice(&piece);
        c.extend_from_slice(b"\r\n");
        chunks.push(c);
    }
    chunks.push(b"0\r\n\r\n".to_vec());
    let res = raw(addr, head, chunks).await;
    assert!(
        res.starts_with("HTTP/1.1 413"),
        "got: {}",
        &res[..res.len().min(300)]
    );
    assert!(res.contains("upload_too_large"));
}

#[actix_web::test]
async fn real_server_transcribes_with_reqwest() {
    let addr = serve(web::Data::new(fake(|| Ok(transcript()))));
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .text("response_format", "text")
        .part(
            "file",
            reqwest::multipart::Part::bytes(wav()).file_name("tone.wav"),
        );
    let res = reqwest::Client::new()
        .post(format!("http://{addr}{TRANSCRIPTIONS_ROUTE}"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-job-id"], "17");
    assert_eq!(res.text().await.unwrap(), "Hello there.\n");
}
