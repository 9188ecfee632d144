//! Money: integer minor units of an ISO 4217 currency, never a float. The currency table gives
//! each currency its exponent (minor units per major unit: JPY 0, EUR 2, KWD 3), which scales
//! the configured maximum.

use std::collections::BTreeMap;
use std::fmt;

/// Active ISO 4217 currencies (fund codes, precious metals and testing codes left out) with
/// their exponents, sorted by code.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// A currency of the table: its upper-case code and exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

impl Currency {
    /// An upper-case ISO 4217 code of the table (`EUR`); a lower-case one is refused with a
    /// hint, an unknown one by name.
    pub fn parse(code: &str) -> Result<Currency, String> {
        if let Ok(index) = CURRENCIES.binary_search_by(|(known, _)| (*known).cmp(code)) {
            let (code, exponent) = CURRENCIES[index];
            return Ok(Currency { code, exponent });
        }
        let upper = code.to_ascii_uppercase();
        if upper != code && CURRENCIES.iter().any(|(known, _)| *known == upper) {
            return Err(format!("must be upper case: {upper}"));
        }
        Err("is not a supported ISO 4217 currency code".into())
    }

    pub fn code(self) -> &'static str {
        self.code
    }

    /// Minor units per major unit, as a power of ten (EUR: 2, so 100 cents per euro).
    pub fn exponent(self) -> u8 {
        self.exponent
    }

    /// Every code of the table (for the OpenAPI document).
    pub fn codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES.iter().map(|(code, _)| *code)
    }

    /// The largest exponent of the table.
    pub fn max_exponent() -> u8 {
        CURRENCIES.iter().map(|(_, e)| *e).max().unwrap_or(0)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// The configured maximum of one payment, per currency, in major units.
#[derive(Debug, Clone)]
pub struct AmountLimits {
    pub max_major: u64,
    pub per_currency: BTreeMap<String, u64>,
}

impl AmountLimits {
    /// The largest amount of `currency`, in minor units (saturating at `i64::MAX`).
    pub fn max_minor(&self, currency: Currency) -> i64 {
        let major = self
            .per_currency
            .get(currency.code())
            .copied()
            .unwrap_or(self.max_major);
        let scale = 10u64.pow(u32::from(currency.exponent()));
        i64::try_from(major.saturating_mul(scale)).unwrap_or(i64::MAX)
    }
}

/// A positive amount in minor units of `currency`, within the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    amount: i64,
    currency: Currency,
}

impl Money {
    /// Parses a JSON number: an integer from 1 to the currency's maximum. A fraction (`12.5`,
    /// even `12.0`) is refused: amounts are minor units, never floats.
    pub fn parse(
        amount: &serde_json::Number,
        currency: Currency,
        limits: &AmountLimits,
    ) -> Result<Money, String> {
        let max = limits.max_minor(currency);
        let whole = || {
            format!(
                "must be a whole number of minor units of {currency} (e.g. {} for 12{})",
                12 * 10i64.pow(u32::from(currency.exponent())),
                if currency.exponent() == 0 {
                    String::new()
                } else {
                    format!(".{}", "0".repeat(usize::from(currency.exponent())))
                }
            )
        };
        let value = match (amount.as_i64(), amount.as_u64()) {
            (Some(value), _) => value,
            (None, Some(_)) => return Err(format!("must be at most {max} ({currency})")),
            (None, None) => return Err(whole()),
        };
        Money::new(value, currency, max)
    }

    /// `amount` minor units, checked against `max`.
    pub fn new(amount: i64, currency: Currency, max: i64) -> Result<Money, String> {
        if amount <= 0 {
            return Err("must be positive".into());
        }
        if amount > max {
            return Err(format!("must be at most {max} ({currency})"));
        }
        Ok(Money { amount, currency })
    }

    pub fn amount(self) -> i64 {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }
}

impl fmt::Display for Money {
    /// `12.50 EUR`, `500 JPY`, `1.250 KWD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = u32::from(self.currency.exponent());
        if exponent == 0 {
            return write!(f, "{} {}", self.amount, self.currency);
        }
        let scale = 10i64.pow(exponent);
        write!(
            f,
            "{}.{:0width$} {}",
            self.amount / scale,
            self.amount % scale,
            self.currency,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AmountLimits {
        AmountLimits {
            max_major: 1_000_000,
            per_currency: BTreeMap::from([("JPY".to_owned(), 50_000_000)]),
        }
    }

    fn number(json: &str) -> serde_json::Number {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_table_is_sorted_and_knows_the_exponents() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
        let exponent = |code| Currency::parse(code).unwrap().exponent();
        assert_eq!(
            (exponent("JPY"), exponent("EUR"), exponent("KWD")),
            (0, 2, 3)
        );
        assert_eq!(
            Currency::parse("eur").unwrap_err(),
            "must be upper case: EUR"
        );
        assert!(Currency::parse("XXX").is_err());
        assert!(Currency::parse("").is_err());
    }

    #[test]
    fn the_maximum_scales_with_the_exponent() {
        let limits = limits();
        let max = |code| limits.max_minor(Currency::parse(code).unwrap());
        assert_eq!(max("EUR"), 100_000_000);
        assert_eq!(max("KWD"), 1_000_000_000);
        assert_eq!(max("JPY"), 50_000_000, "a per-currency exception");
        let eur = Currency::parse("EUR").unwrap();
        assert!(Money::parse(&number("100000000"), eur, &limits).is_ok());
        assert!(Money::parse(&number("100000001"), eur, &limits).is_err());
    }

    #[test]
    fn amounts_are_positive_whole_minor_units() {
        let eur = Currency::parse("EUR").unwrap();
        let limits = limits();
        for bad in [
            "0",
            "-1",
            "12.5",
            "12.0",
            "1e3",
            "18446744073709551615",
            "1e400",
        ] {
            let Ok(n) = serde_json::from_str::<serde_json::Number>(bad) else {
                continue;
            };
            assert!(Money::parse(&n, eur, &limits).is_err(), "{bad}");
        }
        let money = Money::parse(&number("1250"), eur, &limits).unwrap();
        assert_eq!(money.to_string(), "12.50 EUR");
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(
            Money::new(1005, kwd, 10_000).unwrap().to_string(),
            "1.005 KWD"
        );
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(Money::new(500, jpy, 10_000).unwrap().to_string(), "500 JPY");
    }
}
