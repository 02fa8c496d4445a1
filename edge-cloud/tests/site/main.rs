mod commands;
mod helpers;
mod hub;
mod site;
mod uploads;
