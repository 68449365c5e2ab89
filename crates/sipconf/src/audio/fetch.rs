//! `fileUrl` to a clip: an HTTP(S) GET with a size limit and a timeout, a
//! cache keyed by URL that revalidates with ETag / Last-Modified, and
//! decoding through the one reader (`decode`: WAV in PCM, u-law, A-law or
//! IMA ADPCM; MP3) to mono at the conference rate. Runs on the signalling
//! plane; decoding runs on tokio's blocking pool, never on the media thread.

use super::decode::{decode_to_clip, DecodeError};
use super::Clip;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a file could not be turned into audio.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not an http or https URL")]
    BadUrl(String),
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} did not answer within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("{url} is larger than the limit of {limit_bytes} bytes")]
    TooLarge { url: String, limit_bytes: usize },
    #[error("{url}: {error}")]
    Decode { url: String, error: DecodeError },
}

/// Limits on what a URL may bring in.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
    pub max_seconds: u64,
    /// URLs remembered; the least recently used is forgotten first.
    pub cache_entries: usize,
}

struct Cached {
    etag: Option<String>,
    last_modified: Option<String>,
    clip: Clip,
    last_used: u64,
}

/// Fetches and decodes `fileUrl`s, remembering what it fetched.
pub struct Fetcher {
    client: reqwest::Client,
    limits: FetchLimits,
    cache: Mutex<HashMap<String, Cached>>,
    uses: std::sync::atomic::AtomicU64,
}

impl Fetcher {
    pub fn new(limits: FetchLimits) -> Fetcher {
        let client = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout)
            .user_agent(concat!("sipconf/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Fetcher {
            client,
            limits,
            cache: Mutex::new(HashMap::new()),
            uses: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The clip at `url`: from the cache when the server says it has not
    /// changed (304), else fetched and decoded anew.
    pub async fn fetch(&self, url: &str) -> Result<Clip, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::BadUrl(url.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::BadUrl(url.to_string()));
        }
        // Also per request, so the limit holds even if the client fell back to defaults.
        let mut request = self.client.get(parsed.clone()).timeout(self.limits.timeout);
        let validators = self
            .cache()
            .get(url)
            .map(|c| (c.etag.clone(), c.last_modified.clone()));
        if let Some((etag, last_modified)) = &validators {
            if let Some(etag) = etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = last_modified {
                request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
            }
        }
        let timeout_error = || FetchError::Timeout {
            url: url.to_string(),
            timeout_ms: self.limits.timeout.as_millis() as u64,
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                timeout_error()
            } else {
                FetchError::Connect {
                    url: url.to_string(),
                    reason: e.to_string(),
                }
            }
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            let use_number = self.next_use();
            if let Some(cached) = self.cache().get_mut(url) {
                cached.last_used = use_number;
                return Ok(Arc::clone(&cached.clip));
            }
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            limit_bytes: self.limits.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.limits.max_bytes as u64)
        {
            return Err(too_large());
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.limits.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let max_seconds = self.limits.max_seconds;
        let decoded = tokio::task::spawn_blocking(move || decode_to_clip(body, max_seconds))
            .await
            .unwrap_or_else(|e| Err(DecodeError::Corrupt(format!("the decoder failed: {e}"))));
        let clip = decoded.map_err(|error| FetchError::Decode {
            url: url.to_string(),
            error,
        })?;
        if etag.is_some() || last_modified.is_some() {
            self.remember(url, etag, last_modified, Arc::clone(&clip));
        }
        Ok(clip)
    }

    fn next_use(&self) -> u64 {
        self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn remember(&self, url: &str, etag: Option<String>, last_modified: Option<String>, clip: Clip) {
        let last_used = self.next_use();
        let mut cache = self.cache();
        if !cache.contains_key(url) && cache.len() >= self.limits.cache_entries.max(1) {
            let oldest = cache
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(u, _)| u.clone());
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            url.to_string(),
            Cached {
                etag,
                last_modified,
                clip,
                last_used,
            },
        );
    }
}
