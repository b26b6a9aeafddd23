use sea_orm_migration::prelude::*;

use crate::{null_or_ein, one_of};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone)]
pub enum Profiles {
    Table,
    Id,
    Name,
    OrganizationType,
    Ein,
    MissionStatement,
    Status,
    Keywords,
    FocusAreas,
    NteeCodes,
    City,
    State,
    AnnualRevenue,
    WebsiteUrl,
    LastDiscoveryDate,
    CreatedAt,
    UpdatedAt,
}

pub const ORGANIZATION_TYPES: &[&str] = &["nonprofit", "foundation", "government", "corporate"];
pub const STATUSES: &[&str] = &["active", "draft", "archived", "template"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Profiles::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Profiles::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Profiles::Name).string().not_null())
                    .col(
                        ColumnDef::new(Profiles::OrganizationType)
                            .string()
                            .not_null()
                            .default("nonprofit"),
                    )
                    .col(ColumnDef::new(Profiles::Ein).string().null().unique_key())
                    .col(ColumnDef::new(Profiles::MissionStatement).text().null())
                    .col(
                        ColumnDef::new(Profiles::Status)
                            .string()
                            .not_null()
                            .default("active"),
                    )
                    .col(ColumnDef::new(Profiles::Keywords).text().null())
                    .col(
                        ColumnDef::new(Profiles::FocusAreas)
                            .json_binary()
                            .not_null()
                            .default("[]"),
                    )
                    .col(
                        ColumnDef::new(Profiles::NteeCodes)
                            .json_binary()
                            .not_null()
                            .default("[]"),
                    )
                    .col(ColumnDef::new(Profiles::City).string().null())
                    .col(ColumnDef::new(Profiles::State).string_len(2).null())
                    .col(ColumnDef::new(Profiles::AnnualRevenue).big_integer().null())
                    .col(ColumnDef::new(Profiles::WebsiteUrl).string().null())
                    .col(
                        ColumnDef::new(Profiles::LastDiscoveryDate)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Profiles::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Profiles::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .check(one_of(Profiles::OrganizationType, ORGANIZATION_TYPES))
                    .check(one_of(Profiles::Status, STATUSES))
                    .check(null_or_ein(Profiles::Ein))
                    .to_owned(),
            )
            .await?;

        // Listing filters on status and sorts by updated_at (the default order),
        // name or created_at; the others serve filters in DOMAIN.md.
        let indexes: &[(&str, &[Profiles])] = &[
            (
                "idx_profiles_status_updated_at",
                &[Profiles::Status, Profiles::UpdatedAt],
            ),
            ("idx_profiles_name", &[Profiles::Name]),
            ("idx_profiles_state", &[Profiles::State]),
            ("idx_profiles_created_at", &[Profiles::CreatedAt]),
        ];
        for (name, columns) in indexes {
            let mut index = Index::create();
            index.name(*name).table(Profiles::Table).if_not_exists();
            for column in columns.iter() {
                index.col(column.clone());
            }
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Profiles::Table).if_exists().to_owned())
            .await
    }
}
