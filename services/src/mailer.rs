//! Outgoing mail through lettre: SMTP when configured, else files under `UPHUB_MAIL_DIR` (dev).

use anyhow::Context;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Config;

#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

impl Mailer {
    pub fn from_config(cfg: &Config) -> anyhow::Result<Mailer> {
        match &cfg.smtp_url {
            Some(url) => {
                // Plain SMTP to a relay on the local network (smtp://host:port); TLS to remote
                // relays is left to that relay, which keeps one TLS stack out of the build.
                let (host, port) = parse_smtp_url(url)?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                    .port(port)
                    .timeout(Some(std::time::Duration::from_secs(10)))
                    .build();
                Ok(Mailer::Smtp(transport))
            }
            None => {
                std::fs::create_dir_all(&cfg.mail_dir)
                    .with_context(|| format!("creating {}", cfg.mail_dir))?;
                Ok(Mailer::File(AsyncFileTransport::new(&cfg.mail_dir)))
            }
        }
    }

    pub async fn send(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        body: String,
    ) -> anyhow::Result<()> {
        let from: Mailbox = from.parse().context("mail from")?;
        let to: Mailbox = to.parse().context("mail to")?;
        let msg = Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .context("building mail")?;
        match self {
            Mailer::Smtp(t) => {
                t.send(msg).await.context("smtp send")?;
            }
            Mailer::File(t) => {
                t.send(msg).await.context("file mail")?;
            }
        }
        Ok(())
    }
}

fn parse_smtp_url(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("smtp://")
        .with_context(|| format!("UPHUB_SMTP_URL must look like smtp://host:port, not {url}"))?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_string(), port.parse().context("SMTP port")?)),
        None => Ok((rest.to_string(), 25)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn smtp_urls_parse() {
        assert_eq!(
            super::parse_smtp_url("smtp://127.0.0.1:2525").unwrap(),
            ("127.0.0.1".into(), 2525)
        );
        assert_eq!(
            super::parse_smtp_url("smtp://mail").unwrap(),
            ("mail".into(), 25)
        );
        assert!(super::parse_smtp_url("http://x").is_err());
    }
}
