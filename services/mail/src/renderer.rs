//! Compiled template versions, cached. A version never changes once written, so a compiled
//! version is kept for as long as the process runs (up to a bound), and every message of a
//! send renders from the same one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::PgExecutor;

use crate::domain::{Compiled, TemplateContent};
use crate::store::templates;

/// Versions kept compiled; beyond it the cache starts over (versions in use compile again).
const MAX_CACHED: usize = 1_000;

#[derive(Clone, Default)]
pub struct Renderer {
    cache: Arc<Mutex<HashMap<i64, Arc<Compiled>>>>,
}

impl Renderer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Template version `version_id`, compiled (read from the database on first use).
    pub async fn compiled(
        &self,
        db: impl PgExecutor<'_>,
        version_id: i64,
    ) -> anyhow::Result<Arc<Compiled>> {
        if let Some(compiled) = self.cached(version_id) {
            return Ok(compiled);
        }
        let content = templates::version_content(db, version_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("template version {version_id} does not exist"))?;
        let content = TemplateContent::parse(&content.default_locale, &content.locales.0).map_err(
            |errors| anyhow::anyhow!("template version {version_id} is invalid: {errors:?}"),
        )?;
        let compiled = Arc::new(
            Compiled::new(&content)
                .map_err(|errors| anyhow::anyhow!("template version {version_id}: {errors:?}"))?,
        );
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(version_id, compiled.clone());
        Ok(compiled)
    }

    fn cached(&self, version_id: i64) -> Option<Arc<Compiled>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&version_id)
            .cloned()
    }
}
