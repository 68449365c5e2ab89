//! Catapult's `gender`, `locale` and `voice` mapped to an espeak-ng voice and
//! variant (`en-gb+f3`). The voice table of docs/api.md is this table. Pure
//! data: it runs nothing.

/// A Catapult voice: its espeak-ng language and variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedVoice {
    pub name: &'static str,
    pub language: &'static str,
    pub variant: &'static str,
}

/// Every `voice` of docs/api.md "Audio". Female voices use espeak-ng's female variants
/// `f1`..`f5`, male ones `m1`..`m7`, different ones for voices of one language.
pub const VOICES: &[NamedVoice] = &[
    NamedVoice {
        name: "Susan",
        language: "en-us",
        variant: "f3",
    },
    NamedVoice {
        name: "Julie",
        language: "en-us",
        variant: "f2",
    },
    NamedVoice {
        name: "Dave",
        language: "en-us",
        variant: "m3",
    },
    NamedVoice {
        name: "Paul",
        language: "en-us",
        variant: "m1",
    },
    NamedVoice {
        name: "Kate",
        language: "en-gb",
        variant: "f3",
    },
    NamedVoice {
        name: "Bridget",
        language: "en-gb",
        variant: "f5",
    },
    NamedVoice {
        name: "Esperanza",
        language: "es-419",
        variant: "f3",
    },
    NamedVoice {
        name: "Violeta",
        language: "es",
        variant: "f2",
    },
    NamedVoice {
        name: "Jorge",
        language: "es",
        variant: "m3",
    },
    NamedVoice {
        name: "Jolie",
        language: "fr-fr",
        variant: "f3",
    },
    NamedVoice {
        name: "Bernard",
        language: "fr-fr",
        variant: "m3",
    },
    NamedVoice {
        name: "Katrin",
        language: "de",
        variant: "f3",
    },
    NamedVoice {
        name: "Stefan",
        language: "de",
        variant: "m3",
    },
    NamedVoice {
        name: "Paola",
        language: "it",
        variant: "f3",
    },
    NamedVoice {
        name: "Luca",
        language: "it",
        variant: "m3",
    },
];

/// Every `locale` of docs/api.md "Audio" and its espeak-ng language.
pub const LOCALES: &[(&str, &str)] = &[
    ("en_US", "en-us"),
    ("en_UK", "en-gb"),
    ("es", "es"),
    ("es_MX", "es-419"),
    ("fr", "fr-fr"),
    ("fr_FR", "fr-fr"),
    ("de", "de"),
    ("de_DE", "de"),
    ("it", "it"),
    ("it_IT", "it"),
];

/// The variant for a locale and gender when no `voice` is named.
pub const FEMALE_VARIANT: &str = "f3";
pub const MALE_VARIANT: &str = "m3";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gender {
    Female,
    Male,
}

/// What `gender`, `locale` and `voice` did not name correctly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoiceError {
    #[error("The property voice must be one of {}", names(VOICES.iter().map(|v| v.name)))]
    UnknownVoice,
    #[error("The property locale must be one of {}", names(LOCALES.iter().map(|l| l.0)))]
    UnknownLocale,
    #[error("The property gender must be female or male")]
    UnknownGender,
}

fn names<'a>(all: impl Iterator<Item = &'a str>) -> String {
    all.collect::<Vec<_>>().join(", ")
}

/// The espeak-ng `-v` argument, e.g. `en-gb+f3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EspeakVoice(pub String);

/// Maps the request's fields: a named `voice` wins; otherwise `locale`
/// (default `en_US`) with `gender` (default female); nothing at all is Susan.
pub fn espeak_voice(
    gender: Option<&str>,
    locale: Option<&str>,
    voice: Option<&str>,
) -> Result<EspeakVoice, VoiceError> {
    if let Some(voice) = voice.map(str::trim).filter(|v| !v.is_empty()) {
        let named = VOICES
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case(voice))
            .ok_or(VoiceError::UnknownVoice)?;
        return Ok(EspeakVoice(format!("{}+{}", named.language, named.variant)));
    }
    let gender = match gender.map(str::trim).filter(|g| !g.is_empty()) {
        None => Gender::Female,
        Some(g) if g.eq_ignore_ascii_case("female") => Gender::Female,
        Some(g) if g.eq_ignore_ascii_case("male") => Gender::Male,
        Some(_) => return Err(VoiceError::UnknownGender),
    };
    let language = match locale.map(str::trim).filter(|l| !l.is_empty()) {
        None => "en-us",
        Some(l) => {
            let l = l.replace('-', "_");
            LOCALES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(&l))
                .map(|(_, language)| *language)
                .ok_or(VoiceError::UnknownLocale)?
        }
    };
    let variant = match gender {
        Gender::Female => FEMALE_VARIANT,
        Gender::Male => MALE_VARIANT,
    };
    Ok(EspeakVoice(format!("{language}+{variant}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kate_is_british_and_female_in_any_case() {
        assert_eq!(
            espeak_voice(None, None, Some("kATE")),
            Ok(EspeakVoice("en-gb+f3".into()))
        );
    }

    #[test]
    fn locale_and_gender_choose_language_and_variant() {
        assert_eq!(
            espeak_voice(Some("male"), Some("en_UK"), None),
            Ok(EspeakVoice("en-gb+m3".into()))
        );
        assert_eq!(
            espeak_voice(None, Some("es_MX"), None),
            Ok(EspeakVoice("es-419+f3".into()))
        );
        assert_eq!(
            espeak_voice(None, None, None),
            Ok(EspeakVoice("en-us+f3".into()))
        );
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!(
            espeak_voice(None, None, Some("Hal")),
            Err(VoiceError::UnknownVoice)
        );
        assert_eq!(
            espeak_voice(None, Some("xx_YY"), None),
            Err(VoiceError::UnknownLocale)
        );
        assert_eq!(
            espeak_voice(Some("robot"), None, None),
            Err(VoiceError::UnknownGender)
        );
    }
}
