mod commands;
mod federation;
mod helpers;
mod hub;
mod site;
mod uploads;
