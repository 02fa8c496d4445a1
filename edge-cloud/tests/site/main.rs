mod helpers;
mod hub;
mod site;
