//! Text to speech with the `espeak-ng` program: one process per sentence (a
//! crash or hang costs one sentence, and no GPL code is linked in), the text
//! on stdin (never on the command line, where it could become an option), WAV
//! on stdout, a timeout after which the process is killed, and a cache of
//! sentences already spoken.

use super::decode::{decode_to_clip, DecodeError};
use super::voices::EspeakVoice;
use super::Clip;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Longest `sentence` the API accepts (docs/api.md "Audio").
pub const MAX_SENTENCE_CHARS: usize = 1000;
/// espeak-ng's own output is never longer than this per sentence.
const MAX_SENTENCE_SECONDS: u64 = 120;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpeechError {
    #[error("text to speech is unavailable: the program {0} was not found")]
    Missing(PathBuf),
    #[error("cannot run {program}: {reason}")]
    Spawn { program: PathBuf, reason: String },
    #[error("espeak-ng did not finish within {0} ms and was killed")]
    Timeout(u64),
    #[error("espeak-ng failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("espeak-ng produced unusable audio: {0}")]
    Decode(DecodeError),
    #[error("the sentence is empty")]
    Empty,
    #[error("the sentence is longer than {MAX_SENTENCE_CHARS} characters")]
    TooLong,
}

/// Runs espeak-ng and remembers what it said.
pub struct Speaker {
    program: PathBuf,
    timeout: Duration,
    cache_entries: usize,
    cache: Mutex<HashMap<(EspeakVoice, String), Clip>>,
}

impl Speaker {
    pub fn new(program: PathBuf, timeout: Duration, cache_entries: usize) -> Speaker {
        Speaker {
            program,
            timeout,
            cache_entries,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The program, when it can be found (a path, or a name on `PATH`).
    pub fn program(&self) -> Option<PathBuf> {
        find_program(&self.program)
    }

    /// Fails fast, before anything is queued, when espeak-ng is not installed.
    pub fn check_available(&self) -> Result<(), SpeechError> {
        self.program()
            .map(|_| ())
            .ok_or_else(|| SpeechError::Missing(self.program.clone()))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(EspeakVoice, String), Clip>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The text spoken with `voice`, sentence by sentence, as one clip.
    pub async fn speak(&self, text: &str, voice: &EspeakVoice) -> Result<Clip, SpeechError> {
        if text.chars().count() > MAX_SENTENCE_CHARS {
            return Err(SpeechError::TooLong);
        }
        let sentences = sentences(text);
        if sentences.is_empty() {
            return Err(SpeechError::Empty);
        }
        let program = self
            .program()
            .ok_or_else(|| SpeechError::Missing(self.program.clone()))?;
        let mut parts = Vec::with_capacity(sentences.len());
        for sentence in sentences {
            let key = (voice.clone(), sentence.to_string());
            let cached = self.cache().get(&key).cloned();
            let clip = match cached {
                Some(clip) => clip,
                None => {
                    let clip = self.run(&program, sentence, voice).await?;
                    let mut cache = self.cache();
                    if cache.len() >= self.cache_entries.max(1) {
                        // Simple and bounded: a full cache starts again.
                        cache.clear();
                    }
                    cache.insert(key, Arc::clone(&clip));
                    clip
                }
            };
            parts.push(clip);
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        Ok(parts.iter().flat_map(|c| c.iter().copied()).collect())
    }

    async fn run(
        &self,
        program: &Path,
        sentence: &str,
        voice: &EspeakVoice,
    ) -> Result<Clip, SpeechError> {
        let mut child = tokio::process::Command::new(program)
            .arg("-v")
            .arg(&voice.0)
            .arg("--stdout")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SpeechError::Missing(program.to_path_buf()),
                _ => SpeechError::Spawn {
                    program: program.to_path_buf(),
                    reason: e.to_string(),
                },
            })?;
        let timeout_ms = self.timeout.as_millis() as u64;
        let text = sentence.to_string();
        let mut stdin = child.stdin.take();
        let work = async move {
            if let Some(stdin) = stdin.as_mut() {
                // A program that exits early closes the pipe; its status says why.
                let _ = stdin.write_all(text.as_bytes()).await;
                let _ = stdin.write_all(b"\n").await;
            }
            drop(stdin);
            child.wait_with_output().await
        };
        // On timeout the future (and with it the child) is dropped: kill_on_drop kills it.
        let output = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| SpeechError::Timeout(timeout_ms))?
            .map_err(|e| SpeechError::Spawn {
                program: program.to_path_buf(),
                reason: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(SpeechError::Failed {
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        let wav = output.stdout;
        tokio::task::spawn_blocking(move || decode_to_clip(wav, MAX_SENTENCE_SECONDS))
            .await
            .unwrap_or_else(|e| Err(DecodeError::Corrupt(e.to_string())))
            .map_err(SpeechError::Decode)
    }
}

/// The text cut after `.`, `!` or `?` followed by a space, trimmed, without empty pieces.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let ends = matches!(b, b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_some_and(|n| n.is_ascii_whitespace());
        if ends {
            pieces.push(&text[start..=i]);
            start = i + 1;
        }
    }
    pieces.push(&text[start..]);
    pieces
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// `program` itself when it contains a slash, else the first match on `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_into_sentences_at_stops_followed_by_space() {
        assert_eq!(
            sentences("Hello there. Version 2.5 is out! Ready? "),
            ["Hello there.", "Version 2.5 is out!", "Ready?"]
        );
        assert!(sentences("   ").is_empty());
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let speaker = Speaker::new(
            PathBuf::from("/nonexistent/espeak-ng"),
            Duration::from_secs(1),
            8,
        );
        assert_eq!(
            speaker.check_available(),
            Err(SpeechError::Missing(PathBuf::from(
                "/nonexistent/espeak-ng"
            )))
        );
        let voice = EspeakVoice("en-us+f3".into());
        assert!(matches!(
            speaker.speak("Hello.", &voice).await,
            Err(SpeechError::Missing(_))
        ));
    }

    #[tokio::test]
    async fn a_program_that_hangs_is_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("sipconf-tts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let program = dir.join("espeak-ng");
        std::fs::write(&program, "#!/bin/sh\nexec sleep 30\n").expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let speaker = Speaker::new(program, Duration::from_millis(300), 8);
        let started = std::time::Instant::now();
        let voice = EspeakVoice("en-us+f3".into());
        let result = speaker.speak("Hello.", &voice).await;
        assert_eq!(result, Err(SpeechError::Timeout(300)));
        assert!(started.elapsed() < Duration::from_secs(3));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn espeak_speaks_a_sentence_for_about_its_length() {
        let speaker = Speaker::new(PathBuf::from("espeak-ng"), Duration::from_secs(10), 8);
        if speaker.check_available().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "espeak-ng is required in CI"
            );
            eprintln!("SKIPPED: espeak-ng is not installed");
            return;
        }
        let voice = EspeakVoice("en-us+f3".into());
        let clip = speaker
            .speak("The quick brown fox jumps over the lazy dog.", &voice)
            .await
            .expect("speech");
        let seconds = clip.len() as f64 / 8000.0;
        assert!((1.0..5.0).contains(&seconds), "{seconds} s");
        let again = speaker
            .speak("The quick brown fox jumps over the lazy dog.", &voice)
            .await
            .expect("speech");
        assert!(Arc::ptr_eq(&clip, &again), "served from the cache");
    }
}
