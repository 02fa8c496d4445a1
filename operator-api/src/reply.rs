//! Successful responses in the envelope `{status, message, data}`.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::AuditTarget;

pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    with_status(StatusCode::OK, "ok", data)
}

/// A 201 whose new resource id the audit log records as the target.
pub fn created<T: Serialize>(id: i64, data: T) -> HttpResponse {
    let mut response = with_status(StatusCode::CREATED, "created", data);
    response
        .extensions_mut()
        .insert(AuditTarget(id.to_string()));
    response
}

pub fn with_status<T: Serialize>(status: StatusCode, message: &str, data: T) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "status": status.as_u16(),
        "message": message,
        "data": data,
    }))
}

/// One page of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub page: u64,
    pub per_page: u64,
    pub total: u64,
}

pub const MAX_PER_PAGE: u64 = 1000;

/// Validated page parameters (1-based page, 1..=1000 per page, default 50).
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: u64,
    pub per_page: u64,
}

impl PageRequest {
    pub fn new(page: Option<u64>, per_page: Option<u64>) -> Result<Self, crate::ApiError> {
        let page = page.unwrap_or(1);
        let per_page = per_page.unwrap_or(50);
        if page == 0 {
            return Err(crate::ApiError::invalid("page", "starts at 1"));
        }
        if per_page == 0 || per_page > MAX_PER_PAGE {
            return Err(crate::ApiError::invalid(
                "per_page",
                format!("must be between 1 and {MAX_PER_PAGE}"),
            ));
        }
        // The database takes offsets as i64; anything past that is a client error, not
        // something to hand to the driver.
        let fits = (page - 1)
            .checked_mul(per_page)
            .is_some_and(|offset| i64::try_from(offset).is_ok());
        if !fits {
            return Err(crate::ApiError::invalid("page", "is too large"));
        }
        Ok(Self { page, per_page })
    }

    pub fn offset(&self) -> u64 {
        (self.page - 1).saturating_mul(self.per_page)
    }

    pub fn wrap<T>(&self, items: Vec<T>, total: u64) -> Paged<T> {
        Paged {
            items,
            page: self.page,
            per_page: self.per_page,
            total,
        }
    }
}

/// `SELECT COUNT(*)` over a query's rows. sea-orm's own paginator count wraps the
/// whole select (every column) in a subquery, which costs far more on large tables.
pub async fn count<E, C>(db: &C, query: sea_orm::Select<E>) -> Result<u64, sea_orm::DbErr>
where
    E: sea_orm::EntityTrait,
    C: sea_orm::ConnectionTrait,
{
    use sea_orm::QuerySelect;
    let mut query = query.select_only();
    QuerySelect::query(&mut query).clear_order_by();
    let n: Option<i64> = query
        .column_as(sea_orm::sea_query::Expr::cust("COUNT(*)"), "n")
        .into_tuple()
        .one(db)
        .await?;
    Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}
