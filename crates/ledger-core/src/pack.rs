//! Credit packs (what customers buy) and the signup bonus.

use serde::{Deserialize, Serialize};

use crate::amount::{Cents, Credits};
use crate::ids::PackId;

/// A credit pack of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditPack {
    pub id: PackId,
    pub name: String,
    pub credits: Credits,
    pub price: Cents,
    pub popular: bool,
    pub active: bool,
    /// The payment provider's product for this pack; unset means it cannot be bought.
    pub product_id: Option<String>,
}

impl CreditPack {
    /// The description of the `purchase` entry: `Purchased 1,000 credits`.
    pub fn purchase_description(&self) -> String {
        format!("Purchased {} credits", self.credits.grouped())
    }
}

/// Why a catalogue is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("credit pack `{id}` appears twice")]
    DuplicateId { id: PackId },
    #[error("credit pack `{id}`: credits must be greater than zero")]
    NoCredits { id: PackId },
    #[error("credit pack `{id}`: price_cents must not be negative")]
    NegativePrice { id: PackId },
    #[error("credit pack id `{id}` must be non-empty and use only letters, digits, `_` or `-`")]
    BadId { id: PackId },
}

/// The configured packs, checked once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalogue {
    packs: Vec<CreditPack>,
}

impl Catalogue {
    pub fn new(packs: Vec<CreditPack>) -> Result<Catalogue, CatalogueError> {
        let mut seen = std::collections::BTreeSet::new();
        for p in &packs {
            let id_ok = !p.id.as_str().is_empty()
                && p.id
                    .as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !id_ok {
                return Err(CatalogueError::BadId { id: p.id.clone() });
            }
            if !seen.insert(p.id.clone()) {
                return Err(CatalogueError::DuplicateId { id: p.id.clone() });
            }
            if !p.credits.is_positive() {
                return Err(CatalogueError::NoCredits { id: p.id.clone() });
            }
            if p.price.get() < 0 {
                return Err(CatalogueError::NegativePrice { id: p.id.clone() });
            }
        }
        Ok(Catalogue { packs })
    }

    /// The four packs of the ScreenshotAPI docs, with no payment product configured.
    pub fn seed_default() -> Catalogue {
        let pack = |id: &str, name: &str, credits: i64, cents: i64, popular: bool| CreditPack {
            id: PackId::new(id),
            name: name.into(),
            credits: Credits::whole(credits),
            price: Cents::new(cents),
            popular,
            active: true,
            product_id: None,
        };
        Catalogue {
            packs: vec![
                pack("pack_starter", "Starter", 100, 500, false),
                pack("pack_pro", "Pro", 1_000, 3_500, true),
                pack("pack_business", "Business", 5_000, 12_500, false),
                pack("pack_enterprise", "Enterprise", 25_000, 50_000, false),
            ],
        }
    }

    /// Active packs, ordered by credits (then id).
    pub fn active(&self) -> Vec<&CreditPack> {
        let mut out: Vec<&CreditPack> = self.packs.iter().filter(|p| p.active).collect();
        out.sort_by(|a, b| a.credits.cmp(&b.credits).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// An active pack by id; inactive packs cannot be bought.
    pub fn find_active(&self, id: &str) -> Option<&CreditPack> {
        self.packs.iter().find(|p| p.active && p.id.as_str() == id)
    }

    /// Any pack by id, active or not (webhooks for packs retired after checkout still pay).
    pub fn find(&self, id: &str) -> Option<&CreditPack> {
        self.packs.iter().find(|p| p.id.as_str() == id)
    }

    pub fn all(&self) -> &[CreditPack] {
        &self.packs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_catalogue_matches_the_seed() {
        let c = Catalogue::seed_default();
        let ids: Vec<_> = c
            .active()
            .iter()
            .map(|p| p.id.as_str().to_owned())
            .collect();
        assert_eq!(
            ids,
            [
                "pack_starter",
                "pack_pro",
                "pack_business",
                "pack_enterprise"
            ]
        );
        let pro = c.find_active("pack_pro").unwrap();
        assert_eq!(
            (pro.credits, pro.price, pro.popular),
            (Credits::whole(1000), Cents::new(3500), true)
        );
        assert_eq!(pro.purchase_description(), "Purchased 1,000 credits");
    }

    #[test]
    fn inactive_packs_are_hidden_and_not_for_sale() {
        let mut packs = Catalogue::seed_default().all().to_vec();
        packs[0].active = false;
        let c = Catalogue::new(packs).unwrap();
        assert_eq!(c.active().len(), 3);
        assert!(c.find_active("pack_starter").is_none());
        assert!(c.find("pack_starter").is_some());
    }

    #[test]
    fn bad_catalogues_are_refused() {
        let mut packs = Catalogue::seed_default().all().to_vec();
        packs.push(packs[0].clone());
        assert!(matches!(
            Catalogue::new(packs),
            Err(CatalogueError::DuplicateId { .. })
        ));
        let mut packs = Catalogue::seed_default().all().to_vec();
        packs[1].credits = Credits::ZERO;
        assert!(matches!(
            Catalogue::new(packs),
            Err(CatalogueError::NoCredits { .. })
        ));
        let mut packs = Catalogue::seed_default().all().to_vec();
        packs[1].id = PackId::new("bad id");
        assert!(matches!(
            Catalogue::new(packs),
            Err(CatalogueError::BadId { .. })
        ));
    }
}
