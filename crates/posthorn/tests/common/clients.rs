//! Plain HTTP/1.1 and SMTP clients over TCP, for tests that need exact
//! answers under load and across a kill: each call says whether the whole
//! answer arrived (a request cut by the kill was not answered).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Browsers' user agent, so tracker hits are a person's.
pub const BROWSER_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// The address of an `http://IP:PORT` base URL.
pub fn address(base: &str) -> SocketAddr {
    base.strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not an http://IP:PORT base: {base}"))
}

/// One HTTP/1.1 request on a connection of its own; (status, body). An error
/// when the server went away before the whole answer arrived.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let incomplete = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "incomplete answer");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: {BROWSER_UA}\r\n"
    );
    if let Some(key) = key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(incomplete)?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let body = &answer[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(incomplete)?;
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if length.is_some_and(|n| body.len() < n) {
        return Err(incomplete());
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

/// A plain SMTP client: commands and their (multi-line) replies.
pub struct SmtpClient {
    stream: BufReader<TcpStream>,
}

impl SmtpClient {
    pub fn connect(addr: SocketAddr) -> std::io::Result<SmtpClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut client = SmtpClient {
            stream: BufReader::new(stream),
        };
        let (code, text) = client.reply()?;
        if code != 220 {
            return Err(std::io::Error::other(format!("greeting: {code} {text}")));
        }
        Ok(client)
    }

    pub fn reply(&mut self) -> std::io::Result<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let code = line.get(..3).and_then(|c| c.parse().ok());
            let Some(code) = code else {
                return Err(std::io::Error::other(format!("not a reply: {line}")));
            };
            text.push_str(line.get(4..).unwrap_or("").trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
            text.push('\n');
        }
    }

    pub fn command(&mut self, line: &str) -> std::io::Result<(u16, String)> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// Writes bytes as they are (a message's data, ending in `.` CRLF).
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.get_mut().write_all(bytes)
    }

    pub fn expect(&mut self, line: &str, code: u16) -> std::io::Result<String> {
        let (got, text) = self.command(line)?;
        if got != code {
            return Err(std::io::Error::other(format!("{line}: {got} {text}")));
        }
        Ok(text)
    }

    /// One transaction. `Some(id)`: the 250 after DATA and the id it names
    /// (`queued as ID`, `kept as ID`); `None`: refused.
    pub fn send(
        &mut self,
        from: &str,
        to: &[String],
        message: &str,
    ) -> std::io::Result<Option<String>> {
        self.expect(&format!("MAIL FROM:<{from}>"), 250)?;
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250)?;
        }
        self.expect("DATA", 354)?;
        let mut data = String::new();
        for line in message.split_inclusive("\r\n") {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
        }
        data.push_str(".\r\n");
        self.stream.get_mut().write_all(data.as_bytes())?;
        let (code, text) = self.reply()?;
        Ok((code == 250).then(|| text.rsplit(' ').next().unwrap_or("").to_owned()))
    }
}

/// `\0user\0password`, base64: AUTH PLAIN's initial response.
pub fn auth_plain(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0load\0{key}"))
}
